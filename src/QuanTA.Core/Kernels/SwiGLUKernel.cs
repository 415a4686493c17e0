using System.Runtime.InteropServices;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Kernels;

/// <summary>
/// SwiGLU, <c>silu(g) · u</c>, as one elementwise CUDA kernel each way (<c>Sources/swiglu.cu</c>), with the semantics of
/// libtorch's <c>silu</c> then <c>mul</c> in the inputs' type T (bf16, fp16 or fp32): every op computes in fp32 and rounds
/// its result to T.
/// <code>
///   forward:   s = round_T(silu(g))                  silu(x) = x / (1 + e^(−x))        (B, T, I)
///              h = round_T(s · u)                     only g and u are saved — s is recomputed
///   backward:  du = round_T(dh · s)                   sig = 1 / (1 + e^(−g))
///              ds = round_T(dh · u)                   dg = round_T(ds · sig · (1 + g · (1 − sig)))
/// </code>
/// The derivation is in docs/kernels.md; <see cref="ReferenceBackward"/> is the same formula in plain TorchSharp ops.
/// </summary>
internal static unsafe class SwiGLUKernel
{
    /// <summary>The embedded CUDA C source.</summary>
    public const string SourceFile = "swiglu.cu";

    /// <summary>Gradients handed back to libtorch by the kernel nodes (each backward frees its thread's previous ones).</summary>
    internal static readonly ReturnedGradients Returned = new();

    /// <summary>The extern "C" kernel names the C# side launches, for every covered type.</summary>
    internal static IEnumerable<string> EntryPoints =>
        new[] { "f32", "bf16", "f16" }.SelectMany(t => new[] { $"swiglu_fwd_{t}", $"swiglu_bwd_{t}" });

    /// <summary>True when the kernel covers these tensors: one supported type, the same shape, one device, not empty.</summary>
    public static bool Covers(Tensor g, Tensor u) =>
        KernelSelfCheck.TypeSuffix(g.dtype) != null && g.dtype == u.dtype && g.numel() > 0 && g.shape.SequenceEqual(u.shape) &&
        g.device_type == u.device_type && g.device_index == u.device_index;

    /// <summary>
    /// <c>silu(g) · u</c> through the kernel, as one autograd node when a gradient is wanted; null when the caller must run
    /// its libtorch expression (see <see cref="KernelAvailability"/>). A strided input is made contiguous first.
    /// </summary>
    public static Tensor? TryForward(Tensor g, Tensor u)
    {
        if (g.device_type != DeviceType.CUDA || !Covers(g, u)) return null;
        var module = KernelAvailability.ModuleFor(g, SourceFile);
        if (module == null || !SelfChecked(module)) return null;
        if (is_grad_enabled() && (g.requires_grad || u.requires_grad))
            return SwiGLUFunction.Apply(g, u, module);
        using var scope = NewDisposeScope();
        return Forward(module, g.contiguous(), u.contiguous()).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Once per loaded module: the kernel's forward and backward on small inputs of every covered type (7 × 33 elements, so
    /// the vector loop and its scalar tail both run, and a copy starting one element in, so the unaligned loop runs) against
    /// libtorch's <c>silu(g) · u</c> and <see cref="ReferenceBackward"/> on the same device. A kernel that disagrees (relative
    /// error ≥ 1e-4 in fp32, 1e-2 in 16 bits) is reported once and that device keeps libtorch's path — a guard against a
    /// miscompiled or mislaunched kernel on a GPU it was never checked on.
    /// </summary>
    static bool SelfChecked(LoadedModule module) => KernelSelfCheck.Passed(module, () =>
    {
        string? failure = null;
        var dev = device(DeviceType.CUDA, module.Device);
        using var gen = new Generator(20261203);
        foreach (var (dtype, bound) in new[] { (ScalarType.Float32, 1e-4), (ScalarType.BFloat16, 1e-2), (ScalarType.Float16, 1e-2) })
        {
            foreach (int offset in new[] { 0, 1 })
            {
                // offset 1: views one element into a larger buffer, contiguous but not 16-byte aligned
                Tensor Draw() => (2 * randn(7 * 33 + offset, generator: gen)).to_type(dtype).to(dev)[offset..].view(7, 33);
                var (g, u, dh) = (Draw(), Draw(), Draw());
                var h = Forward(module, g, u);
                var (dg, du) = Backward(module, dh, g, u, needG: true, needU: true);
                var (rdg, rdu) = ReferenceBackward(g, u, dh);
                double err = new[] { KernelSelfCheck.RelErr(h, ReferenceForward(g, u)), KernelSelfCheck.RelErr(dg!, rdg), KernelSelfCheck.RelErr(du!, rdu) }.Max();
                if (!(err < bound)) { failure = $"{dtype} self-check (offset {offset}) relative error {err:E2} (bound {bound:E0})"; break; }
            }
            if (failure != null) break;
        }
        return failure;
    });

    const uint Block = 256;

    // Enough blocks for one 16-byte pack per thread, at most 8192 (the loops are grid-stride).
    static uint GridFor(Tensor t)
    {
        long perPack = 16 / t.element_size();
        long packs = (t.numel() + perPack - 1) / perPack;
        return (uint)Math.Clamp((packs + Block - 1) / Block, 1, 8192);
    }

    static IntPtr Ptr(Tensor t) => TensorPointers.DataPointer(t);

    /// <summary>h = silu(g) · u (g's shape and type); g and u contiguous, same type and shape.</summary>
    internal static Tensor Forward(LoadedModule module, Tensor g, Tensor u)
    {
        var h = empty(g.shape, dtype: g.dtype, device: g.device);
        long n = g.numel();
        var name = $"swiglu_fwd_{KernelSelfCheck.TypeSuffix(g.dtype)}";
        var f = module.Function(name);
        IntPtr pg = Ptr(g), pu = Ptr(u), ph = Ptr(h);
        void** args = stackalloc void*[4];
        args[0] = &pg; args[1] = &pu; args[2] = &ph; args[3] = &n;
        using (CudaDriver.Enter(module.Device))
            // Stream 0, the legacy default stream: libtorch's current stream in this project (see RMSNormKernel.Forward).
            CudaDriver.Launch(f, GridFor(g), Block, IntPtr.Zero, args, name);
        return h;
    }

    /// <summary>dg when <paramref name="needG"/>, du when <paramref name="needU"/> (g's shape and type), in one pass over
    /// dh, g and u; dh is converted to g's type and made contiguous first, g and u are contiguous.</summary>
    internal static (Tensor? Dg, Tensor? Du) Backward(LoadedModule module, Tensor dh, Tensor g, Tensor u, bool needG, bool needU)
    {
        var d = dh.to_type(g.dtype).contiguous();
        var dg = needG ? empty(g.shape, dtype: g.dtype, device: g.device) : null;
        var du = needU ? empty(g.shape, dtype: g.dtype, device: g.device) : null;
        if (dg is null && du is null) return (null, null);
        long n = g.numel();
        var name = $"swiglu_bwd_{KernelSelfCheck.TypeSuffix(g.dtype)}";
        var f = module.Function(name);
        IntPtr pd = Ptr(d), pg = Ptr(g), pu = Ptr(u);
        IntPtr pdg = dg is null ? IntPtr.Zero : Ptr(dg), pdu = du is null ? IntPtr.Zero : Ptr(du);
        void** args = stackalloc void*[6];
        args[0] = &pd; args[1] = &pg; args[2] = &pu; args[3] = &pdg; args[4] = &pdu; args[5] = &n;
        using (CudaDriver.Enter(module.Device))
            CudaDriver.Launch(f, GridFor(g), Block, IntPtr.Zero, args, name);   // stream 0: see Forward
        return (dg, du);
    }

    /// <summary>libtorch's expression, <c>silu(g) · u</c> (what <see cref="Models.Llama.LlamaMLP"/> computes on the libtorch path).</summary>
    internal static Tensor ReferenceForward(Tensor g, Tensor u) => nn.functional.silu(g) * u;

    /// <summary>
    /// The backward of <c>silu(g) · u</c> by the hand-derived formula, in plain TorchSharp ops: what the kernel computes,
    /// written for checking against autograd. fp64 inputs compute in fp64, others in fp32 with T's roundings where libtorch
    /// stores a T tensor (s, ds, and the results).
    /// </summary>
    internal static (Tensor Dg, Tensor Du) ReferenceBackward(Tensor g, Tensor u, Tensor dh)
    {
        using var scope = NewDisposeScope();
        var acc = g.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        Tensor RoundT(Tensor t) => t.to_type(g.dtype).to_type(acc);
        var x = g.to_type(acc);                                                      // (…) every input widened
        var d = dh.to_type(acc);
        var den = 1 + exp(-x);
        var s = RoundT(x / den);                                                     // round_T(silu(g)), the forward's s
        var sig = 1 / den;
        var du = (d * s).to_type(g.dtype);                                           // round_T(dh · s)
        var ds = RoundT(d * u.to_type(acc));                                         // round_T(dh · u)
        var dg = (ds * sig * (1 + x * (1 - sig))).to_type(g.dtype);                  // round_T(ds · sig · (1 + g(1 − sig)))
        return (dg.MoveToOuterDisposeScope(), du.MoveToOuterDisposeScope());
    }
}

/// <summary>
/// The kernel's autograd node: saves only the contiguous g and u — not the silu output libtorch's <c>mul</c> keeps as a
/// third (B, T, I) tensor — and runs the backward kernel, which recomputes silu. Arguments: g, u, the <see cref="LoadedModule"/>.
/// </summary>
internal sealed class SwiGLUFunction : autograd.SingleTensorFunction<SwiGLUFunction>
{
    public override string Name => "QuanTASwiGLU";

    /// <summary>Runs the node; the output wrapper made inside <c>forward</c> is freed when <c>apply</c> returns.</summary>
    public static Tensor Apply(Tensor g, Tensor u, LoadedModule module)
        => CustomFunctionOutput.Apply(() => apply(g, u, module));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (g, u, module) = ((Tensor)vars[0], (Tensor)vars[1], (LoadedModule)vars[2]);
        using var scope = NewDisposeScope();
        var gc = g.contiguous();                                                     // a copy only when the input is strided
        var uc = u.contiguous();
        var h = SwiGLUKernel.Forward(module, gc, uc);
        ctx.save_for_backward([CustomFunctionOutput.KeepUntilSaved(gc), CustomFunctionOutput.KeepUntilSaved(uc)]);
        ctx.save_data("module", module);
        ctx.save_data("needs", new[] { g.requires_grad, u.requires_grad });
        return CustomFunctionOutput.Keep(h);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor dh)
    {
        var returned = SwiGLUKernel.Returned;
        returned.Release();                                                          // earlier gradients are in the engine now
        var module = (LoadedModule)ctx.get_data("module");
        var needs = (bool[])ctx.get_data("needs");
        var saved = ctx.get_saved_variables();
        var result = new List<Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var (dg, du) = SwiGLUKernel.Backward(module, dh, saved[0], saved[1], needs[0], needs[1]);
            result.Add(dg?.DetachFromDisposeScope()!); result.Add(du?.DetachFromDisposeScope()!); result.Add(null!);
        }
        finally
        {
            foreach (var t in saved) t?.Dispose();
            dh.Dispose();
        }
        returned.Hold(result);
        return result;
    }
}
