// RMSNorm forward and backward, LLaMA / transformers semantics (QuanTA.Core.Models.Llama.LlamaRMSNorm):
//   h = float(x);  r = rsqrt(mean(h^2) + eps);  n = round_T(h * r);  y = round_O(float(w) * float(n))
// T = the input's type, W = the weight's, O = their promotion (T when equal, else fp32). Accumulation in fp32.
// Backward (derivation in docs/kernels.md), per row with g = round_T(float(dy) * float(w)) and n = h * r (unrounded):
//   dx = round_T(r * (g - n * sum(g * n) / C))        dw += float(dy) * float(round_T(n))   (summed over rows)
// Compiled by NVRTC at first use (no headers: u16 and the F32/BF16/F16 conversions come from prelude.cuh, which
// KernelModules prepends). One thread block per row, grid-stride over rows; the C# side (RMSNormKernel.cs) picks the
// block size and passes contiguous row-major buffers.

// Sum of v over the block, returned to every thread. blockDim.x is a multiple of 32, at most 1024.
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float partial[32];
    __syncthreads();                                                   // partial[] may still be read from the last call
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;                                                          // every warp reduced the same 32 partials
}

template <class T, class W, class O>
__device__ void rmsnorm_forward(const typename T::storage* __restrict__ x, const typename W::storage* __restrict__ w,
                                typename O::storage* __restrict__ y, float* __restrict__ rstd, int rows, int cols, float eps)
{
    for (int row = blockIdx.x; row < rows; row += gridDim.x)
    {
        long long base = (long long)row * cols;
        float ss = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) { float h = T::load(x, base + j); ss += h * h; }
        ss = block_sum(ss);
        float r = rsqrtf(ss * (1.0f / (float)cols) + eps);
        if (threadIdx.x == 0) rstd[row] = r;
        for (int j = threadIdx.x; j < cols; j += blockDim.x)
        {
            float n = T::round(T::load(x, base + j) * r);
            O::store(y, base + j, W::load(w, j) * n);
        }
    }
}

// dw_partial (nullable): (gridDim.x, cols) fp32, zero on entry; block b adds its rows' dy * round_T(n) to row b
// (each column belongs to one thread of the block, so no atomics). dx (nullable) when x needs no gradient.
template <class T, class W, class O>
__device__ void rmsnorm_backward(const typename O::storage* __restrict__ dy, const typename T::storage* __restrict__ x,
                                 const typename W::storage* __restrict__ w, const float* __restrict__ rstd,
                                 typename T::storage* __restrict__ dx, float* __restrict__ dw_partial, int rows, int cols)
{
    for (int row = blockIdx.x; row < rows; row += gridDim.x)
    {
        long long base = (long long)row * cols;
        float r = rstd[row];
        float dot = 0.0f;
        if (dx != 0)
        {
            for (int j = threadIdx.x; j < cols; j += blockDim.x)
            {
                float g = T::round(O::load(dy, base + j) * W::load(w, j));
                dot += g * (T::load(x, base + j) * r);
            }
            dot = block_sum(dot) * (1.0f / (float)cols);
        }
        for (int j = threadIdx.x; j < cols; j += blockDim.x)
        {
            float n = T::load(x, base + j) * r;
            float d = O::load(dy, base + j);
            if (dx != 0)
            {
                float g = T::round(d * W::load(w, j));
                T::store(dx, base + j, r * (g - n * dot));
            }
            if (dw_partial != 0) dw_partial[(long long)blockIdx.x * cols + j] += d * T::round(n);
        }
    }
}

// extern "C" entry points, one per (input type, weight type); the output type is their promotion.
#define QUANTA_RMSNORM(TN, WN, T, W, O)                                                                                 \
    extern "C" __global__ void rmsnorm_fwd_##TN##_##WN(const T::storage* x, const W::storage* w, O::storage* y,         \
                                                       float* rstd, int rows, int cols, float eps)                      \
    { rmsnorm_forward<T, W, O>(x, w, y, rstd, rows, cols, eps); }                                                       \
    extern "C" __global__ void rmsnorm_bwd_##TN##_##WN(const O::storage* dy, const T::storage* x, const W::storage* w,  \
                                                       const float* rstd, T::storage* dx, float* dw_partial,            \
                                                       int rows, int cols)                                              \
    { rmsnorm_backward<T, W, O>(dy, x, w, rstd, dx, dw_partial, rows, cols); }

QUANTA_RMSNORM(f32, f32, F32, F32, F32)
QUANTA_RMSNORM(f32, bf16, F32, BF16, F32)
QUANTA_RMSNORM(f32, f16, F32, F16, F32)
QUANTA_RMSNORM(bf16, bf16, BF16, BF16, BF16)
QUANTA_RMSNORM(bf16, f32, BF16, F32, F32)
QUANTA_RMSNORM(bf16, f16, BF16, F16, F32)
QUANTA_RMSNORM(f16, f16, F16, F16, F16)
QUANTA_RMSNORM(f16, f32, F16, F32, F32)
QUANTA_RMSNORM(f16, bf16, F16, BF16, F32)
