// SwiGLU forward and backward with the semantics of libtorch's silu(g) * u (QuanTA.Core.Models.Llama.LlamaMLP).
// T = the type of g, u and h (bf16, fp16 or fp32); every op computes in fp32 and rounds its result to T, as libtorch does:
//   forward:   s = round_T(silu(float(g)))      silu(x) = x / (1 + expf(-x))      (PyTorch's CUDA silu kernel)
//              h = round_T(s * float(u))
//   backward:  du  = round_T(dh * s)                                               (mul's backward for u)
//              ds  = round_T(dh * u)                                               (mul's backward for silu(g))
//              sig = 1 / (1 + expf(-g))
//              dg  = round_T(ds * sig * (1 + g * (1 - sig)))                       (PyTorch's silu_backward formula)
// Only g and u are kept for the backward: s and sig are recomputed from g. 1 + g * (1 - sig) is written as one fmaf, the
// way nvcc contracts it in PyTorch's build (--fmad=true); the products stay separate (nothing to contract them with).
// Compiled by NVRTC at first use, without fast math and without headers (u16 and the F32/BF16/F16 conversions come from
// prelude.cuh, which KernelModules prepends).
// Elementwise and memory-bound: each thread moves 16 bytes per operand per step (8 bf16/fp16 or 4 fp32 elements) when
// every pointer is 16-byte aligned, then a scalar loop takes the tail (or everything, when a pointer is not aligned).
// Grid-stride loops, 64-bit indices; the C# side (SwiGLUKernel.cs) passes contiguous buffers of n elements each.

// 16 bytes of elements, loaded and stored as one vector access.
template <class S>
struct alignas(16) Pack
{
    static const int N = 16 / sizeof(S);
    S v[N];
};

__device__ __forceinline__ bool aligned16(const void* p) { return (((unsigned long long)p) & 15ull) == 0; }

// h = round_T(round_T(silu(g)) * u), silu as PyTorch's kernel computes it (an IEEE division, expf without fast math).
template <class T>
__device__ __forceinline__ float swiglu_value(float g, float u)
{
    float s = T::round(g / (1.0f + expf(-g)));
    return s * u;
}

// dg and du for one element (both rounded to T by the caller's narrow; ds is rounded here, as libtorch stores it).
template <class T>
__device__ __forceinline__ void swiglu_grads(float dh, float g, float u, float& dg, float& du)
{
    float den = 1.0f + expf(-g);
    float s = T::round(g / den);                                       // the forward's silu output, bit for bit
    float sig = 1.0f / den;
    du = dh * s;
    float ds = T::round(dh * u);
    dg = ds * sig * fmaf(g, 1.0f - sig, 1.0f);
}

template <class T>
__device__ void swiglu_forward(const typename T::storage* __restrict__ g, const typename T::storage* __restrict__ u,
                               typename T::storage* __restrict__ h, long long n)
{
    typedef typename T::storage S;
    const int N = Pack<S>::N;
    long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (aligned16(g) && aligned16(u) && aligned16(h))
    {
        long long packs = n / N;
        const Pack<S>* gp = reinterpret_cast<const Pack<S>*>(g);
        const Pack<S>* up = reinterpret_cast<const Pack<S>*>(u);
        Pack<S>* hp = reinterpret_cast<Pack<S>*>(h);
        for (long long p = start; p < packs; p += stride)
        {
            Pack<S> a = gp[p], b = up[p], c;
#pragma unroll
            for (int k = 0; k < N; k++) c.v[k] = T::narrow(swiglu_value<T>(T::widen(a.v[k]), T::widen(b.v[k])));
            hp[p] = c;
        }
        done = packs * N;
    }
    for (long long i = done + start; i < n; i += stride) h[i] = T::narrow(swiglu_value<T>(T::widen(g[i]), T::widen(u[i])));
}

// dg, du (each nullable: not written when that input needs no gradient).
template <class T>
__device__ void swiglu_backward(const typename T::storage* __restrict__ dh, const typename T::storage* __restrict__ g,
                                const typename T::storage* __restrict__ u, typename T::storage* __restrict__ dg,
                                typename T::storage* __restrict__ du, long long n)
{
    typedef typename T::storage S;
    const int N = Pack<S>::N;
    long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    long long done = 0;
    if (aligned16(dh) && aligned16(g) && aligned16(u) && aligned16(dg) && aligned16(du))    // a null pointer counts as aligned
    {
        long long packs = n / N;
        const Pack<S>* dhp = reinterpret_cast<const Pack<S>*>(dh);
        const Pack<S>* gp = reinterpret_cast<const Pack<S>*>(g);
        const Pack<S>* up = reinterpret_cast<const Pack<S>*>(u);
        Pack<S>* dgp = reinterpret_cast<Pack<S>*>(dg);
        Pack<S>* dup = reinterpret_cast<Pack<S>*>(du);
        for (long long p = start; p < packs; p += stride)
        {
            Pack<S> a = dhp[p], b = gp[p], c = up[p], x, y;
#pragma unroll
            for (int k = 0; k < N; k++)
            {
                float vg, vu;
                swiglu_grads<T>(T::widen(a.v[k]), T::widen(b.v[k]), T::widen(c.v[k]), vg, vu);
                x.v[k] = T::narrow(vg);
                y.v[k] = T::narrow(vu);
            }
            if (dg != 0) dgp[p] = x;
            if (du != 0) dup[p] = y;
        }
        done = packs * N;
    }
    for (long long i = done + start; i < n; i += stride)
    {
        float vg, vu;
        swiglu_grads<T>(T::widen(dh[i]), T::widen(g[i]), T::widen(u[i]), vg, vu);
        if (dg != 0) dg[i] = T::narrow(vg);
        if (du != 0) du[i] = T::narrow(vu);
    }
}

// extern "C" entry points, one per type and direction (written out, so the names the C# side launches appear literally).
extern "C" __global__ void swiglu_fwd_f32(const float* g, const float* u, float* h, long long n)
{ swiglu_forward<F32>(g, u, h, n); }
extern "C" __global__ void swiglu_fwd_bf16(const u16* g, const u16* u, u16* h, long long n)
{ swiglu_forward<BF16>(g, u, h, n); }
extern "C" __global__ void swiglu_fwd_f16(const u16* g, const u16* u, u16* h, long long n)
{ swiglu_forward<F16>(g, u, h, n); }

extern "C" __global__ void swiglu_bwd_f32(const float* dh, const float* g, const float* u, float* dg, float* du, long long n)
{ swiglu_backward<F32>(dh, g, u, dg, du, n); }
extern "C" __global__ void swiglu_bwd_bf16(const u16* dh, const u16* g, const u16* u, u16* dg, u16* du, long long n)
{ swiglu_backward<BF16>(dh, g, u, dg, du, n); }
extern "C" __global__ void swiglu_bwd_f16(const u16* dh, const u16* g, const u16* u, u16* dg, u16* du, long long n)
{ swiglu_backward<F16>(dh, g, u, dg, du, n); }
