using QuanTA.Core.Adapters;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models;

/// <summary>
/// Activation (gradient) checkpointing of one decoder layer, what transformers' <c>gradient_checkpointing_enable()</c> does:
/// the layer's forward runs without a graph and only its input is kept; its backward runs the layer again with a graph and
/// differentiates it. Between forward and backward a layer then keeps one (B, T, C) tensor instead of its activations
/// (attention scores' inputs, the MLP's intermediate, the norms' inputs), for one more layer forward per step.
/// <para>
/// What the layer reads that needs a gradient, besides its input, is passed to the node as inputs so the gradients reach
/// it: the layer's trainable parameters (per-layer adapters, LoRA, a trainable norm) and, on a fused QuanTA path, the tensors
/// of this micro-batch's steps (<see cref="IStepLinear.Inputs"/>: the stacked ΔW slice or the layerwise block operators),
/// which the recompute reads as fresh leaves (<see cref="IStepLinear.Rebind"/>) so their gradients flow on into the bank.
/// Random ops (adapter dropout, the only ones a decoder layer has) see the same random numbers in the recompute: on the CPU
/// the generator's state is saved and put back around it; on CUDA (whose generator state TorchSharp cannot read) the layer
/// runs under a seed drawn from the CPU generator, both times. A layer without active dropout touches no generator.
/// </para>
/// </summary>
internal static class DecoderLayerCheckpoint
{
    /// <summary>The layer and how to run it: <c>run(x, constants)</c>, where the constants (cos, sin, a mask) are tensors
    /// without gradient kept for the recompute.</summary>
    internal sealed record Layer(nn.Module Module, Func<Tensor, Tensor?[], Tensor> Run, ReturnedGradients Returned)
    {
        public AdaptableLinear[] Linears { get; } = Module.modules().OfType<AdaptableLinear>().ToArray();

        /// <summary>True when a forward now would draw random numbers: an attached adapter has dropout and the layer trains.</summary>
        public bool DrawsRandomNumbers => Module.training &&
            Linears.Any(l => l.Adapter?.modules().OfType<TorchSharp.Modules.Dropout>().Any() == true);
    }

    /// <summary><c>layer.Run(x, constants)</c> as one checkpointed node; a plain call when nothing needs a gradient.</summary>
    public static Tensor Forward(Layer layer, Tensor x, params Tensor?[] constants)
    {
        var steps = layer.Linears.Select(l => !l.IsMerged && l.Adapter?.StepLinear is { IsLive: true } s ? s : null).ToArray();
        var stepped = new HashSet<IntPtr>(layer.Linears.Where((_, i) => steps[i] is not null)
            .SelectMany(l => l.Adapter!.parameters()).Select(p => p.Handle));                 // their own tensors are not read
        var parameters = layer.Module.parameters().Where(p => p.requires_grad && !stepped.Contains(p.Handle))
            .DistinctBy(p => p.Handle).ToArray();
        var stepInputs = steps.SelectMany(s => s?.Inputs ?? []).ToArray();
        if (!is_grad_enabled() || (!x.requires_grad && parameters.Length == 0 && stepInputs.Length == 0))
            return layer.Run(x, constants);
        var node = new Node(layer, steps, constants.Select(c => c is not null).ToArray(), parameters, x.requires_grad, layer.DrawsRandomNumbers ? RandomReplay.Capture(x.device) : RandomReplay.None);
        object[] args = [x, node, .. constants.Select(c => (object?)c ?? Missing), .. parameters, .. stepInputs];
        return CustomFunctionOutput.Apply(() => CheckpointedLayerFunction.apply(args));
    }

    /// <summary>Stands for a null constant among the node's arguments (the mask of an unpadded batch).</summary>
    static readonly object Missing = new();

    internal sealed record Node(Layer Layer, IStepLinear?[] Steps, bool[] ConstantPresent, Tensor[] Parameters, bool InputNeedsGrad, RandomReplay Random)
    {
        public int ConstantCount => ConstantPresent.Length;
        public static bool IsMissing(object o) => ReferenceEquals(o, Missing);
    }

    /// <summary>Makes a layer's random ops repeat in its recompute.</summary>
    internal sealed class RandomReplay
    {
        readonly Tensor? _cpuState;   // CPU: the generator's state before the forward
        readonly long? _cudaSeed;     // CUDA: the seed both runs use

        RandomReplay(Tensor? cpuState, long? cudaSeed) { _cpuState = cpuState; _cudaSeed = cudaSeed; }

        /// <summary>For a layer that draws no random numbers: the recompute runs as it is.</summary>
        public static readonly RandomReplay None = new(null, null);

        public static RandomReplay Capture(Device device)
        {
            if (device.type != DeviceType.CUDA) return new(torch.random.get_rng_state().DetachFromDisposeScope(), null);   // kept until the backward
            long seed;
            using (var s = randint(long.MaxValue, [1], dtype: ScalarType.Int64)) seed = s.item<long>();   // from the CPU generator
            cuda.manual_seed_all(seed);
            return new(null, seed);
        }

        /// <summary>Runs <paramref name="f"/> with the random state the forward had; the CPU generator's current state is put
        /// back afterwards.</summary>
        public T Replay<T>(Func<T> f)
        {
            if (_cudaSeed is long seed) { cuda.manual_seed_all(seed); return f(); }
            if (_cpuState is null) return f();                                   // None
            using var now = torch.random.get_rng_state();
            torch.random.set_rng_state(_cpuState!);
            try { return f(); }
            finally { torch.random.set_rng_state(now); }
        }

        public void Dispose() => _cpuState?.Dispose();
    }
}

/// <summary>The checkpointed layer as an autograd node. Arguments: x, the <see cref="DecoderLayerCheckpoint.Node"/>, the
/// constants, the trainable parameters, the steps' inputs.</summary>
internal sealed class CheckpointedLayerFunction : autograd.SingleTensorFunction<CheckpointedLayerFunction>
{
    public override string Name => "QuanTACheckpointedDecoderLayer";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var node = (DecoderLayerCheckpoint.Node)vars[1];
        var constants = vars.Skip(2).Take(node.ConstantCount).Select(c => DecoderLayerCheckpoint.Node.IsMissing(c) ? null : (Tensor)c).ToArray();
        var stepInputs = vars.Skip(2 + node.ConstantCount + node.Parameters.Length).Cast<Tensor>().ToArray();
        var y = node.Layer.Run(x, constants);              // no graph: apply runs forward with gradients off
        ctx.save_for_backward([x, .. constants.Where(c => c is not null).Cast<Tensor>(), .. stepInputs]);
        ctx.save_data("node", node);
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var node = (DecoderLayerCheckpoint.Node)ctx.get_data("node");
        var returned = node.Layer.Returned;
        returned.Release();                                // the previous node's gradients are in the engine now
        var saved = ctx.get_saved_variables();
        var result = new List<Tensor>();
        var linears = node.Layer.Linears;
        var before = linears.Select(l => l.Adapter?.StepLinear).ToArray();
        try
        {
            using var scope = NewDisposeScope();
            var x = saved[0].detach().requires_grad_(node.InputNeedsGrad);
            int k = 1;
            var constants = new Tensor?[node.ConstantCount];
            for (int i = 0; i < constants.Length; i++) constants[i] = node.ConstantPresent[i] ? saved[k++] : null;
            var stepLeaves = saved.Skip(k).Select(t => t.detach().requires_grad_(true)).ToArray();
            int j = 0;
            for (int i = 0; i < linears.Length; i++)                  // this step's fused paths read the fresh leaves
                if (node.Steps[i] is { } s)
                {
                    int n = s.Inputs.Count;
                    linears[i].Adapter!.StepLinear = s.Rebind(stepLeaves[j..(j + n)]);
                    j += n;
                }
            Tensor y;
            using (enable_grad()) y = node.Random.Replay(() => node.Layer.Run(x, constants));
            Tensor[] wrt = [.. node.InputNeedsGrad ? [x] : Array.Empty<Tensor>(), .. node.Parameters, .. stepLeaves];
            var grads = wrt.Length > 0 ? autograd.grad([y], wrt, [g], allow_unused: true) : [];
            static Tensor? Defined(Tensor? t) => t is null || t.IsInvalid ? null : t;              // allow_unused: an undefined gradient
            int q = 0;
            result.Add(node.InputNeedsGrad ? Defined(grads[q++])! : null!);                   // x
            result.Add(null!);                                                                // the node
            for (int i = 0; i < node.ConstantCount; i++) result.Add(null!);                  // constants
            for (int i = 0; i < node.Parameters.Length + stepLeaves.Length; i++) result.Add(Defined(grads[q++])!);
            foreach (var t in result) t?.DetachFromDisposeScope();
        }
        finally
        {
            for (int i = 0; i < linears.Length; i++) if (linears[i].Adapter is { } a) a.StepLinear = before[i];
            foreach (var t in saved) t?.Dispose();
            g.Dispose();
            node.Random.Dispose();
        }
        returned.Hold(result);
        return result;
    }
}
