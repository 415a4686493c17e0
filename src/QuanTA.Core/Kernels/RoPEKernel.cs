using System.Runtime.InteropServices;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Kernels;

/// <summary>
/// Rotary position embedding as one CUDA kernel each way (<c>Sources/rope.cu</c>), with the semantics and the bf16/fp16
/// roundings of the libtorch expression in <see cref="Models.Llama.LlamaRotaryEmbedding.Apply"/> (transformers'
/// <c>apply_rotary_pos_emb</c>). x (B, H, T, hd) of type T (bf16, fp16 or fp32) with any strides (a transposed view of a
/// projection output is read in place); cos and sin (B or 1, T, hd) of the same type, not trainable.
/// <code>
///   forward:   y  = round_T( round_T(x · cos) + round_T(rot(x) · sin) )        rot(x)  = [−x2, x1]
///   backward:  dx = round_T( round_T(dy · cos) + rotᵀ(round_T(dy · sin)) )     rotᵀ(r) = [r2, −r1]
/// </code>
/// The node saves only cos and sin (alive anyway: every layer uses them) and runs one launch each way, where libtorch runs
/// five forward and about eight backward with x-sized temporaries. y and dx are fresh tensors laid out in x's
/// memory order: for the attention's (B, T, H, hd) projection viewed as (B, H, T, hd) that is what libtorch's elementwise
/// ops produce today (SDPA sees the same strides), and dx in that order makes the projection's transpose + view backward
/// free. The derivation is in docs/kernels.md (RoPE); <see cref="ReferenceBackward"/> is the same formula in TorchSharp ops.
/// </summary>
internal static unsafe class RoPEKernel
{
    /// <summary>The embedded CUDA C source.</summary>
    public const string SourceFile = "rope.cu";

    /// <summary>Gradients handed back to libtorch by the kernel nodes (each backward frees its thread's previous ones).</summary>
    internal static readonly ReturnedGradients Returned = new();

    const uint Block = 256;

    /// <summary>Element strides of one tensor for the three row dimensions, outermost first (rope.cu's <c>RowStrides</c>).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal record struct RowStrides(long S0, long S1, long S2);

    /// <summary>rope.cu's scalar and stride arguments for one launch: <c>Rows</c> = n0·n1·n2 rows in memory order (n0
    /// implied), <c>Half</c> = hd/2 pairs a row, rows of 2^<c>LaneBits</c> lanes (the power of two ≥ half, at most the
    /// 256-thread block) so a block takes 256 / 2^LaneBits rows at a time, and the grid (grid-stride beyond 2²⁰ blocks).</summary>
    internal readonly record struct LaunchPlan(uint N1, uint N2, uint Half, uint Rows, uint LaneBits, RowStrides In, RowStrides Cos, RowStrides Sin, RowStrides Out, uint Grid);

    /// <summary>The launch arguments for input/output (B, H, T, hd) and cos/sin (B or 1, T, hd), rows in <paramref name="order"/>.</summary>
    internal static LaunchPlan Plan(Tensor input, Tensor cos, Tensor sin, Tensor output, int[] order)
    {
        var shape = input.shape;
        var (b, h, t) = (shape[0], shape[1], shape[2]);
        using var cos4 = cos.unsqueeze(1).expand(b, h, t, shape[3]);                     // (B, H, T, hd), zero strides where broadcast
        using var sin4 = sin.unsqueeze(1).expand(b, h, t, shape[3]);
        uint half = (uint)(shape[3] / 2), rows = checked((uint)(input.numel() / shape[3]));
        uint laneBits = 0;
        while ((1u << (int)laneBits) < half && (1u << (int)laneBits) < Block) laneBits++;
        uint rowsPerBlock = Block >> (int)laneBits;
        return new LaunchPlan((uint)shape[order[1]], (uint)shape[order[2]], half, rows, laneBits,
            StridesOf(input, order), StridesOf(cos4, order), StridesOf(sin4, order), StridesOf(output, order),
            (uint)Math.Min((rows + rowsPerBlock - 1) / rowsPerBlock, 1u << 20));
    }

    /// <summary>
    /// True when the kernel covers these tensors: x 4-D (B, H, T, hd) with hd even, cos and sin 3-D (B or 1, T, hd) of
    /// x's type (bf16, fp16 or fp32) on x's device, neither needing a gradient, and B·H·T·hd/2 below 2³¹.
    /// </summary>
    public static bool Covers(Tensor x, Tensor cos, Tensor sin)
    {
        if (x.dim() != 4 || cos.dim() != 3 || KernelSelfCheck.TypeSuffix(x.dtype) == null || cos.dtype != x.dtype || sin.dtype != x.dtype) return false;
        long b = x.shape[0], t = x.shape[2], hd = x.shape[3];
        if (hd % 2 != 0 || x.numel() == 0 || x.numel() / 2 > int.MaxValue) return false;
        if ((cos.shape[0] != b && cos.shape[0] != 1) || cos.shape[1] != t || cos.shape[2] != hd) return false;
        if (!sin.shape.SequenceEqual(cos.shape)) return false;
        if (cos.requires_grad || sin.requires_grad) return false;                  // no gradient for cos/sin: libtorch's path
        return cos.device_type == x.device_type && cos.device_index == x.device_index &&
               sin.device_type == x.device_type && sin.device_index == x.device_index;
    }

    /// <summary>
    /// x·cos + rotate_half(x)·sin through the kernel, as one autograd node when x needs a gradient; null when the caller
    /// must run its libtorch expression (CPU, kernels off or unavailable, a case <see cref="Covers"/> refuses, or cos/sin
    /// needing a gradient). The result has x's logical shape (B, H, T, hd) and x's memory order.
    /// </summary>
    public static Tensor? TryApply(Tensor x, Tensor cos, Tensor sin)
    {
        if (x.device_type != DeviceType.CUDA || !Covers(x, cos, sin)) return null;
        var module = KernelAvailability.ModuleFor(x, SourceFile);
        if (module == null || !SelfChecked(module)) return null;
        if (is_grad_enabled() && x.requires_grad)
            return RoPEFunction.Apply(x, cos, sin, module);
        using var scope = NewDisposeScope();
        var (c, s) = Operands(cos, sin);
        return Forward(module, x, c, s).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Once per loaded module: the kernel's forward and backward on small fp32 and bf16 inputs — a transposed view
    /// (B 2, H 3, T 5, hd 12) of a (B, T, H, hd) tensor as the attention passes it, cos/sin per batch row in fp32 and
    /// broadcast from one row in bf16 — against the libtorch expression and <see cref="ReferenceBackward"/> on the same
    /// device. A kernel that disagrees (relative error ≥ 1e-5 in fp32, 1e-2 in bf16; the two paths round identically, so
    /// anything but a tiny difference is a fault) is reported once and that device keeps libtorch's path.
    /// </summary>
    static bool SelfChecked(LoadedModule module) => KernelSelfCheck.Passed(module, () =>
    {
        string? failure = null;
        var dev = device(DeviceType.CUDA, module.Device);
        using var gen = new Generator(20261204);
        foreach (var (dtype, bound, cosRows) in new[] { (ScalarType.Float32, 1e-5, 2L), (ScalarType.BFloat16, 1e-2, 1L) })
        {
            var x = randn(2, 5, 3, 12, generator: gen).to_type(dtype).to(dev).transpose(1, 2);    // (B, H, T, hd) view
            var angle = randn(cosRows, 5, 12, generator: gen) * 3;
            var (cos, sin) = (angle.cos().to_type(dtype).to(dev), angle.sin().to_type(dtype).to(dev));
            var dy = randn(2, 3, 5, 12, generator: gen).to_type(dtype).to(dev);
            var y = Forward(module, x, cos, sin);
            var dx = Backward(module, dy, cos, sin, MemoryOrder(x));
            double err = Math.Max(KernelSelfCheck.RelErr(y, ReferenceForward(x, cos, sin)), KernelSelfCheck.RelErr(dx, ReferenceBackward(dy, cos, sin)));
            if (!(err < bound)) { failure = $"{dtype} self-check relative error {err:E2} (bound {bound:E0})"; break; }
        }
        return failure;
    });

    /// <summary>New handles on cos and sin with a unit stride in the last dimension (a copy only when they are strided there;
    /// otherwise detached aliases of the same storage, which the node may save and free without touching the caller's).</summary>
    internal static (Tensor Cos, Tensor Sin) Operands(Tensor cos, Tensor sin)
        => (cos.stride(-1) == 1 ? cos.detach() : cos.contiguous(), sin.stride(-1) == 1 ? sin.detach() : sin.contiguous());

    /// <summary>The three leading dimensions of a 4-D tensor in its memory order, outermost (largest stride) first; ties keep
    /// the logical order. (B, H, T, hd) viewed from a (B, T, H, hd) tensor gives [0, 2, 1].</summary>
    internal static int[] MemoryOrder(Tensor x)
    {
        var strides = x.stride();
        return new[] { 0, 1, 2 }.OrderByDescending(d => x.shape[d] == 1 ? long.MaxValue : strides[d]).ThenBy(d => d).ToArray();
    }

    /// <summary>A fresh tensor of <paramref name="shape"/> (B, H, T, hd), dense in the memory order <paramref name="order"/>.</summary>
    internal static Tensor EmptyInOrder(long[] shape, int[] order, ScalarType dtype, Device device)
    {
        var dense = empty([shape[order[0]], shape[order[1]], shape[order[2]], shape[3]], dtype: dtype, device: device);
        var inverse = new long[4];
        for (int i = 0; i < 3; i++) inverse[order[i]] = i;
        inverse[3] = 3;
        return dense.permute(inverse);
    }

    static RowStrides StridesOf(Tensor t4, int[] order)
    {
        var s = t4.stride();
        return new RowStrides(s[order[0]], s[order[1]], s[order[2]]);
    }

    static IntPtr Ptr(Tensor t) => TensorPointers.DataPointer(t);

    /// <summary>The rope.cu kernel for a type and direction: <c>rope_fwd_bf16</c>, <c>rope_bwd_f32</c>, ….</summary>
    internal static string EntryPoint(ScalarType dtype, bool backward)
        => $"rope_{(backward ? "bwd" : "fwd")}_{KernelSelfCheck.TypeSuffix(dtype) ?? throw new NotSupportedException($"RoPE kernel: no {dtype} variant (bf16, fp16, fp32).")}";

    /// <summary>y = x·cos + rotate_half(x)·sin (x's shape, type and memory order); cos/sin with unit last stride.</summary>
    internal static Tensor Forward(LoadedModule module, Tensor x, Tensor cos, Tensor sin)
    {
        if (x.stride(-1) != 1) x = x.contiguous();
        var order = MemoryOrder(x);
        var y = EmptyInOrder(x.shape, order, x.dtype, x.device);
        Launch(module, EntryPoint(x.dtype, backward: false), x, cos, sin, y, order);
        return y;
    }

    /// <summary>dx = round_T(dy·cos) + rotᵀ(round_T(dy·sin)) in dy's shape and x's type, laid out in <paramref name="order"/>
    /// (x's memory order, from the forward); dy in any strides and type (converted to cos's type first).</summary>
    internal static Tensor Backward(LoadedModule module, Tensor dy, Tensor cos, Tensor sin, int[] order)
    {
        if (dy.dtype != cos.dtype) dy = dy.to_type(cos.dtype);
        if (dy.stride(-1) != 1) dy = dy.contiguous();
        var dx = EmptyInOrder(dy.shape, order, dy.dtype, dy.device);
        Launch(module, EntryPoint(dy.dtype, backward: true), dy, cos, sin, dx, order);
        return dx;
    }

    // Rows (the three leading dimensions in `order`) of 2^LaneBits threads, one (row, j < half) pair a step.
    static void Launch(LoadedModule module, string name, Tensor input, Tensor cos, Tensor sin, Tensor output, int[] order)
    {
        var p = Plan(input, cos, sin, output, order);
        uint n1 = p.N1, n2 = p.N2, half = p.Half, rows = p.Rows, laneBits = p.LaneBits;
        RowStrides si = p.In, sc = p.Cos, ss = p.Sin, so = p.Out;
        IntPtr pi = Ptr(input), pc = Ptr(cos), ps = Ptr(sin), po = Ptr(output);
        void** args = stackalloc void*[13];
        args[0] = &pi; args[1] = &pc; args[2] = &ps; args[3] = &po; args[4] = &n1; args[5] = &n2; args[6] = &half; args[7] = &rows;
        args[8] = &laneBits; args[9] = &si; args[10] = &sc; args[11] = &ss; args[12] = &so;
        var f = module.Function(name);
        using (CudaDriver.Enter(module.Device))
            // Stream 0, the legacy default stream: libtorch's current stream in this project (see RMSNormKernel.Forward).
            CudaDriver.Launch(f, p.Grid, Block, IntPtr.Zero, args, name);
    }

    /// <summary>The libtorch expression the kernel replaces: x·cos + rotate_half(x)·sin, cos/sin broadcast over heads.</summary>
    internal static Tensor ReferenceForward(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var rotated = cat([-x[.., .., .., (int)half..], x[.., .., .., ..(int)half]], -1);   // (B, H, T, hd)
        return (x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The backward by the hand-derived formula in plain TorchSharp ops, each op in dy's type (so bf16/fp16 round where the
    /// kernel and libtorch's autograd do): dx = dy·cos + rotᵀ(dy·sin), rotᵀ([r1, r2]) = [r2, −r1]. dy (B, H, T, hd).
    /// </summary>
    internal static Tensor ReferenceBackward(Tensor dy, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = (int)(dy.shape[^1] / 2);
        var m = dy * cos.unsqueeze(1);                                                   // round_T(dy · cos)
        var r = dy * sin.unsqueeze(1);                                                   // round_T(dy · sin)
        var rotT = cat([r[.., .., .., half..], -r[.., .., .., ..half]], -1);             // rotᵀ(r), exact
        return (m + rotT).MoveToOuterDisposeScope();                                     // round_T of the sum
    }
}

/// <summary>
/// The kernel's autograd node: saves only cos and sin (as libtorch's graph does) and x's memory order; the forward and
/// the backward are one kernel each, with no temporaries. Arguments: x, cos, sin, the <see cref="LoadedModule"/>. cos and sin get no gradient
/// (<see cref="RoPEKernel.Covers"/> refuses them when they need one).
/// </summary>
internal sealed class RoPEFunction : autograd.SingleTensorFunction<RoPEFunction>
{
    public override string Name => "QuanTARoPE";

    /// <summary>Runs the node; the output wrapper made inside <c>forward</c> is freed when <c>apply</c> returns.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin, LoadedModule module)
        => CustomFunctionOutput.Apply(() => apply(x, cos, sin, module));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, cos, sin, module) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (LoadedModule)vars[3]);
        using var scope = NewDisposeScope();
        var (c, s) = RoPEKernel.Operands(cos, sin);                                      // aliases unless strided in hd
        var y = RoPEKernel.Forward(module, x, c, s);
        ctx.save_for_backward([CustomFunctionOutput.KeepUntilSaved(c), CustomFunctionOutput.KeepUntilSaved(s)]);
        ctx.save_data("module", module);
        ctx.save_data("order", RoPEKernel.MemoryOrder(y));                              // x's memory order: y is dense in it
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var returned = RoPEKernel.Returned;
        returned.Release();                                                              // earlier gradients are in the engine now
        var module = (LoadedModule)ctx.get_data("module");
        var order = (int[])ctx.get_data("order");
        var saved = ctx.get_saved_variables();
        var result = new List<Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var dx = RoPEKernel.Backward(module, g, saved[0], saved[1], order);
            result.Add(dx.DetachFromDisposeScope()); result.Add(null!); result.Add(null!); result.Add(null!);
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
