using System.Runtime.InteropServices;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Kernels;

/// <summary>
/// RMSNorm as one CUDA kernel each way (<c>Sources/rmsnorm.cu</c>), with the semantics of
/// <see cref="Models.Llama.LlamaRMSNorm"/> (transformers' LlamaRMSNorm): normalize in fp32, cast back to the input's type,
/// then scale by the weight. Inputs bf16, fp16 or fp32; the weight in any of those; fp32 accumulation.
/// <code>
///   forward:   r = rsqrt(mean(x²) + ε)            (rows)   fp32, saved with x — nothing else is kept
///              y = w · round_T(x · r)             (…, C)
///   backward:  g = round_T(dy · w),  n = x · r
///              dx = r · (g − n · mean(g · n))     (…, C)   when x needs a gradient
///              dw = Σ_rows dy · round_T(n)        (C)      only when the weight needs one (a frozen base's does not)
/// </code>
/// The derivation is in docs/kernels.md; <see cref="ReferenceBackward"/> is the same formula in plain TorchSharp ops.
/// </summary>
internal static unsafe class RMSNormKernel
{
    /// <summary>The embedded CUDA C source.</summary>
    public const string SourceFile = "rmsnorm.cu";

    /// <summary>Gradients handed back to libtorch by the kernel nodes (each backward frees its thread's previous ones).</summary>
    internal static readonly ReturnedGradients Returned = new();

    /// <summary>The output type: the input's when the weight has the same type, else fp32 (libtorch's promotion of these three).</summary>
    public static ScalarType OutputType(ScalarType x, ScalarType w) => x == w ? x : ScalarType.Float32;

    /// <summary>True when the kernel covers these tensors: supported types, a 1-D weight matching the last dimension, one device.</summary>
    public static bool Covers(Tensor x, Tensor weight) =>
        KernelSelfCheck.TypeSuffix(x.dtype) != null && KernelSelfCheck.TypeSuffix(weight.dtype) != null && weight.dim() == 1 && x.dim() >= 1 &&
        x.shape[^1] == weight.shape[0] && x.numel() > 0 && x.shape[^1] <= int.MaxValue && x.numel() / x.shape[^1] <= int.MaxValue &&
        weight.device_type == x.device_type && weight.device_index == x.device_index;

    /// <summary>
    /// RMSNorm of <paramref name="x"/> scaled by <paramref name="weight"/> through the kernel, as one autograd node when a
    /// gradient is wanted; null when the caller must run its libtorch expression (see <see cref="KernelAvailability"/>).
    /// </summary>
    public static Tensor? TryForward(Tensor x, Tensor weight, double eps)
    {
        if (x.device_type != DeviceType.CUDA || !Covers(x, weight)) return null;
        var module = KernelAvailability.ModuleFor(x, SourceFile);
        if (module == null || !SelfChecked(module)) return null;
        if (is_grad_enabled() && (x.requires_grad || weight.requires_grad))
            return RMSNormFunction.Apply(x, weight, eps, module);
        using var scope = NewDisposeScope();
        var (y, _) = Forward(module, x.contiguous(), weight.contiguous(), eps);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Once per loaded module: the kernel's forward and backward on small fp32 and bf16 inputs (7 rows of 33, trainable weight) against
    /// the libtorch expression and <see cref="ReferenceBackward"/> on the same device. A kernel that disagrees (relative
    /// error ≥ 1e-4 in fp32, 1e-2 in bf16) is reported once and that device keeps libtorch's path — a guard against a miscompiled or mislaunched
    /// kernel on a GPU it was never checked on.
    /// </summary>
    static bool SelfChecked(LoadedModule module) => KernelSelfCheck.Passed(module, () =>
    {
        string? failure = null;
        var dev = device(DeviceType.CUDA, module.Device);
        using var gen = new Generator(20261203);
        foreach (var (dtype, bound) in new[] { (ScalarType.Float32, 1e-4), (ScalarType.BFloat16, 1e-2) })
        {
            var x = randn(7, 33, generator: gen).to_type(dtype).to(dev);
            var w = (1 + 0.1 * randn(33, generator: gen)).to_type(dtype).to(dev);
            var dy = randn(7, 33, generator: gen).to_type(dtype).to(dev);
            const double eps = 1e-6;
            var (y, rstd) = Forward(module, x, w, eps);
            var (dx, dw) = Backward(module, dy, x, w, rstd, needX: true, needW: true);
            var (rdx, rdw) = ReferenceBackward(x, w, dy, eps);
            double err = new[] { KernelSelfCheck.RelErr(y, ReferenceForward(x, w, eps)), KernelSelfCheck.RelErr(dx!, rdx), KernelSelfCheck.RelErr(dw!, rdw) }.Max();
            if (!(err < bound)) { failure = $"{dtype} self-check relative error {err:E2} (bound {bound:E0})"; break; }
        }
        return failure;
    });

    static uint BlockFor(long cols) => (uint)Math.Clamp((cols / 8 + 31) / 32 * 32, 32, 1024);

    static IntPtr Ptr(Tensor t) => TensorPointers.DataPointer(t);

    /// <summary>y (x's shape, <see cref="OutputType"/>) and the per-row rstd (rows, fp32); x and weight contiguous.</summary>
    internal static (Tensor Y, Tensor Rstd) Forward(LoadedModule module, Tensor x, Tensor weight, double eps)
    {
        int cols = (int)x.shape[^1];
        int rows = (int)(x.numel() / cols);
        var y = empty(x.shape, dtype: OutputType(x.dtype, weight.dtype), device: x.device);
        var rstd = empty(rows, dtype: ScalarType.Float32, device: x.device);
        var name = $"rmsnorm_fwd_{KernelSelfCheck.TypeSuffix(x.dtype)}_{KernelSelfCheck.TypeSuffix(weight.dtype)}";
        var f = module.Function(name);
        IntPtr px = Ptr(x), pw = Ptr(weight), py = Ptr(y), pr = Ptr(rstd);
        float e = (float)eps;
        void** args = stackalloc void*[7];
        args[0] = &px; args[1] = &pw; args[2] = &py; args[3] = &pr; args[4] = &rows; args[5] = &cols; args[6] = &e;
        using (CudaDriver.Enter(module.Device))
            // Stream 0, the legacy default stream: TorchSharp exposes no CUDA stream API and this project never sets a
            // stream, so libtorch's current stream is its default stream, which is the legacy default stream.
            CudaDriver.Launch(f, (uint)rows, BlockFor(cols), IntPtr.Zero, args, name);
        return (y, rstd);
    }

    /// <summary>dx (x's shape and type) when <paramref name="needX"/>, dw (weight's shape and type) when <paramref name="needW"/>;
    /// dy is converted to the output type and made contiguous first.</summary>
    internal static (Tensor? Dx, Tensor? Dw) Backward(LoadedModule module, Tensor dy, Tensor x, Tensor weight, Tensor rstd, bool needX, bool needW)
    {
        int cols = (int)x.shape[^1];
        int rows = (int)(x.numel() / cols);
        var g = dy.to_type(OutputType(x.dtype, weight.dtype)).contiguous();
        var dx = needX ? empty(x.shape, dtype: x.dtype, device: x.device) : null;
        int grid = needW ? Math.Min(rows, 512) : rows;
        var partial = needW ? zeros(grid, cols, dtype: ScalarType.Float32, device: x.device) : null;
        var name = $"rmsnorm_bwd_{KernelSelfCheck.TypeSuffix(x.dtype)}_{KernelSelfCheck.TypeSuffix(weight.dtype)}";
        var f = module.Function(name);
        IntPtr pg = Ptr(g), px = Ptr(x), pw = Ptr(weight), pr = Ptr(rstd);
        IntPtr pdx = dx is null ? IntPtr.Zero : Ptr(dx), pdw = partial is null ? IntPtr.Zero : Ptr(partial);
        void** args = stackalloc void*[8];
        args[0] = &pg; args[1] = &px; args[2] = &pw; args[3] = &pr; args[4] = &pdx; args[5] = &pdw; args[6] = &rows; args[7] = &cols;
        using (CudaDriver.Enter(module.Device))
            CudaDriver.Launch(f, (uint)grid, BlockFor(cols), IntPtr.Zero, args, name);   // stream 0: see Forward
        var dw = partial?.sum(0L).to_type(weight.dtype);
        return (dx, dw);
    }

    /// <summary>transformers' RMSNorm expression (what <see cref="Models.Llama.LlamaRMSNorm"/> computes on the libtorch path).</summary>
    internal static Tensor ReferenceForward(Tensor x, Tensor weight, double eps)
    {
        using var scope = NewDisposeScope();
        var h = x.to_type(ScalarType.Float32);                                       // (…, C)
        h = h * rsqrt(h.pow(2).mean([-1], keepdim: true) + eps);
        return (weight * h.to_type(x.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The backward of <see cref="Models.Llama.LlamaRMSNorm"/> by the hand-derived formula, in plain TorchSharp ops: what
    /// the kernel computes, written for checking against autograd (fp64 inputs accumulate in fp64, others in fp32).
    /// </summary>
    internal static (Tensor Dx, Tensor Dw) ReferenceBackward(Tensor x, Tensor weight, Tensor dy, double eps)
    {
        using var scope = NewDisposeScope();
        var acc = x.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var h = x.to_type(acc);                                                      // (…, C)
        var r = rsqrt(h.pow(2).mean([-1], keepdim: true) + eps);                     // (…, 1)
        var n = h * r;                                                               // (…, C) unrounded
        var g = (dy.to_type(acc) * weight.to_type(acc)).to_type(x.dtype).to_type(acc); // round_T(dy · w)
        var dot = (g * n).mean([-1], keepdim: true);                                 // (…, 1)
        var dx = (r * (g - n * dot)).to_type(x.dtype);                               // (…, C)
        var dw = (dy.to_type(acc) * n.to_type(x.dtype).to_type(acc))
            .reshape(-1, x.shape[^1]).sum(0L).to_type(weight.dtype);                  // (C)
        return (dx.MoveToOuterDisposeScope(), dw.MoveToOuterDisposeScope());
    }
}

/// <summary>
/// The kernel's autograd node: saves the contiguous input, the weight and the per-row rstd (fp32) — not the fp32 copies
/// libtorch's expression keeps — and runs the backward kernel. Arguments: x, weight, ε, the <see cref="LoadedModule"/>.
/// </summary>
internal sealed class RMSNormFunction : autograd.SingleTensorFunction<RMSNormFunction>
{
    public override string Name => "QuanTARMSNorm";

    /// <summary>Runs the node; the output wrapper made inside <c>forward</c> is freed when <c>apply</c> returns.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, double eps, LoadedModule module)
        => CustomFunctionOutput.Apply(() => apply(x, weight, eps, module));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, w, eps, module) = ((Tensor)vars[0], (Tensor)vars[1], (double)vars[2], (LoadedModule)vars[3]);
        using var scope = NewDisposeScope();
        var xc = x.contiguous();                                                     // a copy only when x is strided
        var wc = w.contiguous();
        var (y, rstd) = RMSNormKernel.Forward(module, xc, wc, eps);
        ctx.save_for_backward([CustomFunctionOutput.KeepUntilSaved(xc), CustomFunctionOutput.KeepUntilSaved(wc), CustomFunctionOutput.KeepUntilSaved(rstd)]);
        ctx.save_data("module", module);
        ctx.save_data("needs", new[] { x.requires_grad, w.requires_grad });
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var returned = RMSNormKernel.Returned;
        returned.Release();                                                          // earlier gradients are in the engine now
        var module = (LoadedModule)ctx.get_data("module");
        var needs = (bool[])ctx.get_data("needs");
        var saved = ctx.get_saved_variables();
        var result = new List<Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var (dx, dw) = RMSNormKernel.Backward(module, g, saved[0], saved[1], saved[2], needs[0], needs[1]);
            result.Add(dx?.DetachFromDisposeScope()!); result.Add(dw?.DetachFromDisposeScope()!); result.Add(null!); result.Add(null!);
        }
        finally
        {
            foreach (var t in saved) t?.Dispose();
            g.Dispose();
        }
        returned.Hold(result);
        return result;
    }
}
