// Shared prelude of the kernel sources: KernelModules prepends this text to every Kernels/Sources/*.cu before NVRTC
// compiles it (each source is compiled alone, without include paths, so the prelude is text, not a header). It holds the
// 16-bit storage type and the per-type conversions the kernels are written against: F32, BF16 (round to nearest even,
// as c10::BFloat16) and F16 (the PTX cvt instructions). Each kernel calls only the members it needs; the others are
// inline and never called there, so they add no code. A kernel source must not define u16, F32, BF16 or F16 itself.

typedef unsigned short u16;

struct F32
{
    typedef float storage;
    static __device__ __forceinline__ float widen(float v) { return v; }
    static __device__ __forceinline__ float narrow(float v) { return v; }
    static __device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
    static __device__ __forceinline__ float round(float v) { return v; }
    static __device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
    static __device__ __forceinline__ void store2(float* p, long long i, float a, float b) { *(float2*)(p + i) = make_float2(a, b); }
};

struct BF16
{
    typedef u16 storage;
    static __device__ __forceinline__ float widen(u16 b) { return __uint_as_float(((unsigned int)b) << 16); }
    static __device__ __forceinline__ u16 narrow(float v)             // round to nearest even, as c10::BFloat16 does
    {
        unsigned int u = __float_as_uint(v);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)0x7fc0;       // NaN
        u += 0x7fffu + ((u >> 16) & 1u);
        return (u16)(u >> 16);
    }
    static __device__ __forceinline__ float load(const u16* p, long long i) { return widen(p[i]); }
    static __device__ __forceinline__ float round(float v) { return widen(narrow(v)); }
    static __device__ __forceinline__ void store(u16* p, long long i, float v) { p[i] = narrow(v); }
    static __device__ __forceinline__ void store2(u16* p, long long i, float a, float b)
    { *(unsigned int*)(p + i) = (unsigned int)narrow(a) | ((unsigned int)narrow(b) << 16); }
};

struct F16
{
    typedef u16 storage;
    static __device__ __forceinline__ float widen(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
    static __device__ __forceinline__ u16 narrow(float v) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); return h; }
    static __device__ __forceinline__ float load(const u16* p, long long i) { return widen(p[i]); }
    static __device__ __forceinline__ float round(float v) { return widen(narrow(v)); }
    static __device__ __forceinline__ void store(u16* p, long long i, float v) { p[i] = narrow(v); }
    static __device__ __forceinline__ void store2(u16* p, long long i, float a, float b)
    { *(unsigned int*)(p + i) = (unsigned int)narrow(a) | ((unsigned int)narrow(b) << 16); }
};
