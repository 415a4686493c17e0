using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// The fast training path for QuanTA: materializes ΔW for ALL adapted layers of a model at once, per step.
/// Layers whose adapters share a layout, pair chain and in/out size form a group; their tensors are stacked,
/// <code>
///   T_stack[l] = T_i of layer l                       (L, d_m, d_n, d_m, d_n)
///   R = chain(T_stack) on the basis vectors           (L, n_basis, D): one batched contraction per pair for the whole group
///   ΔW[l] = crop(M_T[l]) − crop(M_S[l])               (L, out, in)
/// </code>
/// and every layer then runs ONE GEMM with <c>W0 + ΔW</c> (<see cref="Adapter.StepDeltaWeight"/>). The cost of the chain is
/// ∝ D·min(in,out)·Σk per layer, independent of the number of tokens, and there are N_T kernel launches per group instead of
/// per layer. For GQA-style layers with out &lt; in the transposed chain runs on the `out` row basis vectors instead.
/// The result is exactly <see cref="QuanTAAdapter.DeltaWeight"/> (tested); adapters with dropout are left on their own path.
/// Call <see cref="Materialize"/> inside the step's dispose scope before the forward, and <see cref="Clear"/> after backward.
/// </summary>
public sealed class QuanTABank
{
    sealed record Group(AxisLayout Layout, int In, int Out, QuanTAAdapter[] Adapters);

    readonly Group[] _groups;

    QuanTABank(Group[] groups) => _groups = groups;

    /// <summary>Number of adapters served by the bank.</summary>
    public int AdapterCount => _groups.Sum(g => g.Adapters.Length);

    /// <summary>Number of groups (one batched chain each).</summary>
    public int GroupCount => _groups.Length;

    /// <summary>Collects the full-rank, dropout-free QuanTA adapters attached to <paramref name="model"/>'s layers.</summary>
    public static QuanTABank Create(nn.Module model)
    {
        var adapters = AdapterInjector.LinearLayers(model)
            .Select(x => x.Layer.Adapter).OfType<QuanTAAdapter>()
            .Where(a => a.Rank is null && a.DropoutP == 0).ToList();
        var groups = adapters
            .GroupBy(a => (Key: $"{string.Join(",", a.Layout.Dims)}|{string.Join(" ", a.Layout.Pairs)}", a.InFeatures, a.OutFeatures))
            .Select(g => new Group(g.First().Layout, g.Key.InFeatures, g.Key.OutFeatures, g.ToArray()))
            .ToArray();
        return new QuanTABank(groups);
    }

    /// <summary>
    /// Computes ΔW for every adapter of the bank (differentiable w.r.t. T) in <paramref name="computeDType"/> and hands each
    /// adapter its slice as <see cref="Adapter.StepDeltaWeight"/>. The tensors belong to the caller's dispose scope.
    /// </summary>
    public void Materialize(ScalarType computeDType)
    {
        foreach (var g in _groups)
        {
            var delta = GroupDelta(g, computeDType);                          // (L, out, in)
            for (int l = 0; l < g.Adapters.Length; l++)
                g.Adapters[l].StepDeltaWeight = delta[l];                    // (out, in)
        }
    }

    /// <summary>Forgets the step's ΔW (the layers go back to their own path).</summary>
    public void Clear()
    {
        foreach (var g in _groups)
            foreach (var a in g.Adapters) a.StepDeltaWeight = null;
    }

    /// <summary>ΔW of every layer of a group, (L, out, in): the T chain minus the S chain (the latter without gradient).</summary>
    static Tensor GroupDelta(Group g, ScalarType dtype)
    {
        int L = g.Adapters.Length, nT = g.Layout.TensorCount;
        var dev = g.Adapters[0].TensorS(0).device;
        var t = new Tensor[nT]; var s = new Tensor[nT];
        for (int i = 0; i < nT; i++)
        {
            t[i] = stack(g.Adapters.Select(a => a.TensorT(i)).ToArray()).to_type(dtype);   // (L, d_m, d_n, d_m, d_n)
            using (no_grad()) s[i] = stack(g.Adapters.Select(a => a.TensorS(i)).ToArray()).to_type(dtype);
        }
        var mT = CroppedOperator(g, t, dtype, dev);                                    // (L, out, in)
        Tensor mS;
        using (no_grad()) mS = CroppedOperator(g, s, dtype, dev);
        return mT - mS;
    }

    /// <summary>crop_{out×in}(M) for the stacked chain: with in ≤ out the chain runs on the `in` column basis vectors,
    /// otherwise the transposed chain (reverse order, each tensor transposed) runs on the `out` row basis vectors.</summary>
    static Tensor CroppedOperator(Group g, Tensor[] tensors, ScalarType dtype, Device dev)
    {
        var lay = g.Layout; int L = g.Adapters.Length, n = lay.AxisCount;
        bool columns = g.In <= g.Out;
        int basis = columns ? g.In : g.Out;
        long[] view = [L, basis, .. lay.Dims.Select(d => (long)d)];
        var x = eye(basis, lay.D, dtype: dtype, device: dev).unsqueeze(0).expand(L, basis, lay.D).reshape(view); // (L, b, d0..dN-1)
        var order = columns ? Enumerable.Range(0, lay.TensorCount) : Enumerable.Range(0, lay.TensorCount).Reverse();
        foreach (var i in order)
            x = einsum(Equation(n, lay.Pairs[i], transposed: !columns), x, tensors[i]);   // contract axes (m, n) of every basis vector
        var r = x.reshape(L, basis, lay.D);                                                // columns: r[l, j] = (M e_j)ᵀ; rows: r[l, i] = row i of M
        return columns
            ? r.narrow(2, 0, g.Out).transpose(1, 2)                                        // (L, out, in)
            : r.narrow(2, 0, g.In);                                                        // (L, out, in)
    }

    /// <summary>Batched einsum for one pair, e.g. N=4, (1,3): "lzABCD,lYZBD->lzAYCZ"; transposed: "lzABCD,lBDYZ->lzAYCZ"
    /// (Tᵀ: the tensor's input indices become its output indices).</summary>
    static string Equation(int n, AxisPair p, bool transposed)
    {
        var inAxes = Enumerable.Range(0, n).Select(i => (char)('A' + i)).ToArray();
        var outAxes = (char[])inAxes.Clone();
        outAxes[p.M] = 'Y'; outAxes[p.N] = 'Z';
        var tensor = transposed ? $"{inAxes[p.M]}{inAxes[p.N]}YZ" : $"YZ{inAxes[p.M]}{inAxes[p.N]}";
        return $"lz{new string(inAxes)},l{tensor}->lz{new string(outAxes)}";
    }
}
