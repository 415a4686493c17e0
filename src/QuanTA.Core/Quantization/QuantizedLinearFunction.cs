using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Quantization;

/// <summary>
/// y = x Wᵀ + b for a frozen quantized W, as one autograd node that keeps nothing weight-sized between forward and backward
/// (bitsandbytes' MatMul4Bit does the same):
/// <code>
///   forward:   W = dequantize(q)            (out, in) transient, freed when the forward returns
///              y = x Wᵀ + b                 saves no tensor: W and b are frozen, so x is not needed either
///   backward:  W = dequantize(q)            rebuilt, transient
///              ∂L/∂x = g W                  the only gradient (W and b get none)
/// </code>
/// Arguments: x, the bias (or null), the <see cref="QuantizedWeight"/>, the <see cref="ReturnedGradients"/> holder.
/// </summary>
internal sealed class QuantizedLinearFunction : autograd.SingleTensorFunction<QuantizedLinearFunction>
{
    public override string Name => "QuantizedLinear";

    /// <summary>Runs the node (use only when x needs a gradient; otherwise a plain linear on a transient W is enough).</summary>
    public static Tensor Apply(Tensor x, Tensor? bias, QuantizedWeight weight, ReturnedGradients returned)
        => CustomFunctionOutput.Apply(() => apply(x, bias!, weight, returned));

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, b, q, returned) = ((Tensor)vars[0], vars[1] as Tensor, (QuantizedWeight)vars[2], (ReturnedGradients)vars[3]);
        if (b?.requires_grad == true)
            throw new InvalidOperationException("A quantized layer's bias is frozen: it cannot be trained (set requires_grad = false).");
        using var scope = NewDisposeScope();
        var w = q.Dequantize();                                                       // (out, in) transient
        var y = nn.functional.linear(x, w, b);                                        // (…, out)
        ctx.save_data("weight", q);
        ctx.save_data("returned", returned);
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var q = (QuantizedWeight)ctx.get_data("weight");
        var returned = (ReturnedGradients)ctx.get_data("returned");
        returned.Release();                                                           // earlier layers' gradients are in the engine now
        var result = new List<Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var w = q.Dequantize();                                                   // (out, in) rebuilt, transient
            var gx = g.matmul(w.to_type(g.dtype));                                    // (…, in) = g W
            result.Add(gx.DetachFromDisposeScope()); result.Add(null!); result.Add(null!); result.Add(null!);
        }
        finally { g.Dispose(); }
        returned.Hold(result);
        return result;
    }
}
