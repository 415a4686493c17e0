// RoPE (rotary position embedding) forward and backward, transformers' apply_rotary_pos_emb semantics
// (QuanTA.Core.Models.Llama.LlamaRotaryEmbedding.Apply): y = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
// with x1, x2 the halves of the last dimension (size 2 * half). T = the type of x, cos and sin (all three the same).
// Every elementwise op of the libtorch expression computes in fp32 and rounds its result to T; the kernel rounds at
// the same places, with __fmul_rn / __fadd_rn so that no multiply-add is contracted into an FMA (that would skip a
// rounding libtorch does, and matters in fp32 where round_T is the identity):
//   forward   y1 = round_T( round_T(x1 * c1) + round_T(-x2 * s1) )      y2 = round_T( round_T(x2 * c2) + round_T(x1 * s2) )
//   backward  (rotate_half is linear with adjoint [r1, r2] -> [r2, -r1]; derivation in docs/kernels.md (RoPE))
//             m = round_T(dy * cos),  r = round_T(dy * sin)
//             dx1 = round_T( m1 + r2 )                                  dx2 = round_T( m2 - r1 )
// Each (row, j < half) pair is one thread's step: it reads x[j], x[j + half] (resp. dy) and writes both outputs, with the
// lanes of a row of threads on consecutive j (coalesced). The rows are the three leading dimensions, passed by the C# side (RoPEKernel.cs) in the order of the input's memory (outermost first),
// each tensor with its own element strides for them (cos/sin broadcast over heads by a zero stride); the last dimension
// has stride 1 in every tensor. Compiled by NVRTC at first use: no headers, u16 and the F32/BF16/F16 conversions come
// from prelude.cuh, which KernelModules prepends.

// Element strides of one tensor for the three row dimensions (outermost first); the last dimension has stride 1.
struct RowStrides
{
    long long s0, s1, s2;
    __device__ __forceinline__ long long at(unsigned int i0, unsigned int i1, unsigned int i2) const
    { return (long long)i0 * s0 + (long long)i1 * s1 + (long long)i2 * s2; }
};

// in: x (forward) or dy (backward); out: y (forward) or dx (backward). The block (a multiple of 2^lane_bits threads) is
// split into rows of 2^lane_bits lanes: each row of threads takes one (i0, i1, i2) row at a time (grid-stride) and its
// lanes step through j < half, so the row index is decomposed once per row, not per element. rows = n0 * n1 * n2 < 2^31.
template <class T, bool BACKWARD>
__device__ void rope_apply(const typename T::storage* __restrict__ in, const typename T::storage* __restrict__ cos_t,
                           const typename T::storage* __restrict__ sin_t, typename T::storage* __restrict__ out,
                           unsigned int n1, unsigned int n2, unsigned int half, unsigned int rows, unsigned int lane_bits,
                           RowStrides si, RowStrides sc, RowStrides ss, RowStrides so)
{
    unsigned int lanes = 1u << lane_bits, lane = threadIdx.x & (lanes - 1u);
    unsigned int rows_per_block = blockDim.x >> lane_bits;
    for (unsigned int row = blockIdx.x * rows_per_block + (threadIdx.x >> lane_bits); row < rows; row += gridDim.x * rows_per_block)
    {
        unsigned int i2 = row % n2, r = row / n2;
        unsigned int i1 = r % n1, i0 = r / n1;
        long long bi = si.at(i0, i1, i2), bc = sc.at(i0, i1, i2), bs = ss.at(i0, i1, i2), bo = so.at(i0, i1, i2);
        for (unsigned int j = lane; j < half; j += lanes)
        {
            long long pi = bi + j, pc = bc + j, ps = bs + j, po = bo + j;
            float u1 = T::load(in, pi), u2 = T::load(in, pi + half);
            float c1 = T::load(cos_t, pc), c2 = T::load(cos_t, pc + half);
            float s1 = T::load(sin_t, ps), s2 = T::load(sin_t, ps + half);
            float o1, o2;
            if (!BACKWARD)
            {
                // y = x * cos + [-x2, x1] * sin, each product rounded to T, then the sum
                o1 = __fadd_rn(T::round(__fmul_rn(u1, c1)), T::round(__fmul_rn(-u2, s1)));
                o2 = __fadd_rn(T::round(__fmul_rn(u2, c2)), T::round(__fmul_rn(u1, s2)));
            }
            else
            {
                // dx = round_T(dy * cos) + rotate_half^T(round_T(dy * sin)),  rotate_half^T([r1, r2]) = [r2, -r1]
                o1 = __fadd_rn(T::round(__fmul_rn(u1, c1)), T::round(__fmul_rn(u2, s2)));
                o2 = __fadd_rn(T::round(__fmul_rn(u2, c2)), -T::round(__fmul_rn(u1, s1)));
            }
            T::store(out, po, o1);                                    // store rounds the fp32 sum to T
            T::store(out, po + half, o2);
        }
    }
}

// extern "C" entry points, one per type and direction: rope_fwd_<t> (in = x, out = y), rope_bwd_<t> (in = dy, out = dx).
#define QUANTA_ROPE(TN, T)                                                                                              \
    extern "C" __global__ void rope_fwd_##TN(const T::storage* x, const T::storage* cos_t, const T::storage* sin_t,     \
                                             T::storage* y, unsigned int n1, unsigned int n2, unsigned int half,        \
                                             unsigned int rows, unsigned int lane_bits, RowStrides sx, RowStrides sc,   \
                                             RowStrides ss, RowStrides sy)                                              \
    { rope_apply<T, false>(x, cos_t, sin_t, y, n1, n2, half, rows, lane_bits, sx, sc, ss, sy); }                        \
    extern "C" __global__ void rope_bwd_##TN(const T::storage* dy, const T::storage* cos_t, const T::storage* sin_t,    \
                                             T::storage* dx, unsigned int n1, unsigned int n2, unsigned int half,       \
                                             unsigned int rows, unsigned int lane_bits, RowStrides sdy, RowStrides sc,  \
                                             RowStrides ss, RowStrides sdx)                                             \
    { rope_apply<T, true>(dy, cos_t, sin_t, dx, n1, n2, half, rows, lane_bits, sdy, sc, ss, sdx); }

QUANTA_ROPE(f32, F32)
QUANTA_ROPE(bf16, BF16)
QUANTA_ROPE(f16, F16)
