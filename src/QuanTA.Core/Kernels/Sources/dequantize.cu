// Dequantization of the frozen base's weights (Quantization/NF4Weight.cs, Int8Weight.cs) in one pass: each quantized byte is
// read once and each dense value written once, in the layer's compute type. The arithmetic is the libtorch path's, step by
// step, with the same fp32 roundings (__fmul_rn / __fadd_rn: never contracted into an FMA), so the result is bit-identical:
//   NF4:   a_b = absmax[b]                                                      (fp32 constants), or, double-quantized,
//          a_b = (nested_map[qabsmax[b]] * nested_absmax[b / 256]) + offset     (each op rounded to fp32)
//          W[i] = round_O( quant_map[code_i] * a_{i / 64} )      code_2j = packed[j] >> 4, code_2j+1 = packed[j] & 15
//   Int8:  W[r, c] = round_O( float(q[r, c]) * scale[r] )        scale = absmax / 127, computed by libtorch beforehand
// O = fp32, bf16 (round to nearest even, as c10::BFloat16) or fp16. Grid-stride loops, 64-bit indices. u16 and the
// F32/BF16/F16 stores come from prelude.cuh, which KernelModules prepends (compiled by NVRTC at first use, no headers).

typedef unsigned char u8;

// One thread per packed byte (two values). absmax (fp32, blocks) when qabsmax is null; else the double-quantized form.
// out must be 4-byte aligned (a fresh libtorch allocation is), so the pair at the even index 2j is stored at once.
template <class O>
__device__ void nf4_dequantize(const u8* __restrict__ packed, const float* __restrict__ absmax, const u8* __restrict__ qabsmax,
                               const float* __restrict__ nested_absmax, const float* __restrict__ nested_map,
                               const float* __restrict__ quant_map, float offset, typename O::storage* __restrict__ out, long long n)
{
    __shared__ float levels[16];
    if (threadIdx.x < 16) levels[threadIdx.x] = quant_map[threadIdx.x];
    __syncthreads();
    long long bytes = (n + 1) / 2;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < bytes; j += (long long)gridDim.x * blockDim.x)
    {
        long long i = 2 * j, b = i / 64;
        float a = qabsmax == 0 ? absmax[b] : __fadd_rn(__fmul_rn(nested_map[qabsmax[b]], nested_absmax[b / 256]), offset);
        u8 byte = packed[j];
        float hi = __fmul_rn(levels[byte >> 4], a);
        if (i + 1 < n) O::store2(out, i, hi, __fmul_rn(levels[byte & 15], a));
        else O::store(out, i, hi);
    }
}

template <class O>
__device__ void int8_dequantize(const signed char* __restrict__ q, const float* __restrict__ scale,
                                typename O::storage* __restrict__ out, long long rows, long long cols)
{
    long long n = rows * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        O::store(out, i, __fmul_rn((float)q[i], scale[i / cols]));
}

#define DEQUANTIZE_ENTRY_POINTS(O, ON)                                                                                   \
    extern "C" __global__ void nf4_dequantize_##ON(const u8* packed, const float* absmax, const u8* qabsmax,             \
        const float* nested_absmax, const float* nested_map, const float* quant_map, float offset, O::storage* out,     \
        long long n)                                                                                                    \
    { nf4_dequantize<O>(packed, absmax, qabsmax, nested_absmax, nested_map, quant_map, offset, out, n); }              \
    extern "C" __global__ void int8_dequantize_##ON(const signed char* q, const float* scale, O::storage* out,          \
        long long rows, long long cols)                                                                                 \
    { int8_dequantize<O>(q, scale, out, rows, cols); }

DEQUANTIZE_ENTRY_POINTS(F32, f32)
DEQUANTIZE_ENTRY_POINTS(BF16, bf16)
DEQUANTIZE_ENTRY_POINTS(F16, f16)
