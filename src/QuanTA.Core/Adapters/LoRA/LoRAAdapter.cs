using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// LoRA: <c>Δ(x) = (alpha/r) · dropout(x) Aᵀ Bᵀ</c>, <c>ΔW = (alpha/r) · B A</c> (rank ≤ r). As in PEFT, A [r, in] is
/// kaiming-uniform with a = √5 (i.e. uniform(±1/√in)) and B [out, r] starts at zero, so ΔW = 0 at init.
/// State-dict names under the layer: <c>lora.A</c>, <c>lora.B</c>. Parameters are fp32, cast to the input's dtype for compute.
/// </summary>
public sealed class LoRAAdapter : Adapter
{
    readonly int _in, _out;
    readonly Dropout? _dropout;

    /// <summary>Creates the adapter (A kaiming-uniform, B zeros).</summary>
    public LoRAAdapter(int inFeatures, int outFeatures, int rank, double alpha, double dropout = 0, Generator? generator = null)
        : base(nameof(LoRAAdapter))
    {
        if (inFeatures <= 0 || outFeatures <= 0) throw new ArgumentException($"Layer size must be positive; got {inFeatures}→{outFeatures}.");
        if (rank < 1) throw new ArgumentException($"LoRA rank must be at least 1; got {rank}.", nameof(rank));
        if (dropout is < 0 or >= 1 || double.IsNaN(dropout)) throw new ArgumentException($"Dropout must be in [0, 1); got {dropout}.", nameof(dropout));
        _in = inFeatures; _out = outFeatures; Rank = rank; Alpha = alpha;
        using (no_grad())
        {
            // kaiming_uniform_(a=√5): gain = √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√in
            double bound = 1.0 / Math.Sqrt(inFeatures);
            register_parameter("A", new Parameter(empty(rank, inFeatures, dtype: ScalarType.Float32).uniform_(-bound, bound, generator), requires_grad: true)); // (r, in)
            register_parameter("B", new Parameter(zeros(outFeatures, rank, dtype: ScalarType.Float32), requires_grad: true));                                   // (out, r)
        }
        DropoutP = dropout;
        if (dropout > 0) { _dropout = nn.Dropout(dropout); register_module("dropout", _dropout); }
    }

    /// <summary>Dropout probability on the adapter's input.</summary>
    public double DropoutP { get; }
    /// <inheritdoc/>
    public override int InFeatures => _in;
    /// <inheritdoc/>
    public override int OutFeatures => _out;
    /// <inheritdoc/>
    public override string Method => "lora";
    /// <summary>Rank r.</summary>
    public int Rank { get; }
    /// <summary>alpha (the update is scaled by alpha / r).</summary>
    public double Alpha { get; }
    /// <summary>alpha / r.</summary>
    public double Scale => Alpha / Rank;
    // (C# names differ from the state-dict names "A"/"B": Module.to() reflects on members named like parameters.)
    /// <summary>A [r, in] (fp32, trainable; state-dict name "A").</summary>
    public Parameter LoraA => get_parameter("A")!;
    /// <summary>B [out, r] (fp32, trainable; state-dict name "B").</summary>
    public Parameter LoraB => get_parameter("B")!;

    /// <inheritdoc/>
    public override Tensor Delta(Tensor x)
    {
        if (x.shape[^1] != _in) throw new ArgumentException($"LoRA adapter expects input (…, {_in}); got ({string.Join(", ", x.shape)}).");
        using var scope = NewDisposeScope();
        var h = _dropout is null ? x : _dropout.call(x);                    // (…, in)
        var z = h.matmul(LoraA.to(x.dtype).t());                                  // (…, r)
        return z.matmul(LoraB.to(x.dtype).t()).mul_(Scale).MoveToOuterDisposeScope(); // (…, out)
    }

    /// <summary>y + s · (x Aᵀ) Bᵀ with the scale s = alpha / r and the addition inside the second GEMM (one addmm reading y:
    /// no separate scaling and addition passes over the (…, out) output, forward or backward). PEFT computes
    /// <c>y + lora_B(lora_A(x)) * s</c> with three roundings; this rounds once. Returns a new tensor shaped like y.</summary>
    public override Tensor AddDelta(Tensor y, Tensor x)
    {
        if (!y.is_contiguous() || x.shape[^1] != _in || y.shape[^1] != _out) return base.AddDelta(y, x);
        using var scope = NewDisposeScope();
        var h = _dropout is null ? x : _dropout.call(x);                                       // (…, in)
        var z = h.reshape(-1, _in).mm(LoraA.to(x.dtype).t());                                  // (M, r)
        // TorchSharp's c.addmm(a, b, beta, alpha) = beta·c + alpha·(a @ b)
        var sum = y.view(-1, _out).addmm(z, LoraB.to(x.dtype).t(), beta: 1, alpha: (float)Scale);   // (M, out) = y + s · z Bᵀ
        return sum.view(y.shape).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor DeltaWeight()
    {
        using var scope = NewDisposeScope();
        return LoraB.matmul(LoraA).mul(Scale).MoveToOuterDisposeScope();              // (out, r)(r, in) = (out, in)
    }

    /// <inheritdoc/>
    public override IReadOnlyDictionary<string, object> Describe() => new Dictionary<string, object>
    {
        ["method"] = Method,
        ["in_features"] = _in,
        ["out_features"] = _out,
        ["rank"] = Rank,
        ["alpha"] = Alpha,
        ["rank_bounds"] = new long[] { 0, Math.Min(Rank, Math.Min(_in, _out)) },
        ["dropout"] = DropoutP,
        ["trainable_parameters"] = TrainableParameterCount,
    };
}
