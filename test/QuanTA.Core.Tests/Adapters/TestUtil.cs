using QuanTA.Core.Adapters;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Adapters;

static class TestUtil
{
    static TestUtil() => TorchRuntime.Initialize();

    public static void Init() { }

    /// <summary>‖a − b‖ / ‖b‖ in fp64.</summary>
    public static double RelErr(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var x = a.detach().to_type(ScalarType.Float64); var y = b.detach().to_type(ScalarType.Float64);
        return (x - y).norm().item<double>() / Math.Max(y.norm().item<double>(), 1e-300);
    }

    /// <summary>Same shape, dtype and bytes.</summary>
    public static bool BitEqual(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.detach().contiguous().bytes.SequenceEqual(b.detach().contiguous().bytes);

    public static string FixturePath(params string[] parts) =>
        Path.Combine([AppContext.BaseDirectory, "fixtures", .. parts]);

    public static Dictionary<string, Tensor> LoadQuanTAFixture() =>
        Safetensors.LoadStateDict(FixturePath("quanta-layer", "reference.safetensors"));

    /// <summary>Fills every trainable parameter with fresh random values (so T ≠ S).</summary>
    public static void Randomize(nn.Module m, double scale = 0.3, long seed = 7)
    {
        using var _ = no_grad();
        using var g = new Generator((ulong)seed);
        foreach (var p in m.parameters()) if (p.requires_grad) p.copy_(randn(p.shape, generator: g).mul_(scale));
    }
}

/// <summary>A toy LLaMA-shaped module tree built from AdaptableLinear (names like HF).</summary>
sealed class ToyAttention : nn.Module
{
#pragma warning disable IDE1006
    public AdaptableLinear q_proj, k_proj, v_proj, o_proj;
#pragma warning restore IDE1006
    public ToyAttention(int h, int kv) : base("ToyAttention")
    {
        q_proj = new AdaptableLinear(h, h, false); k_proj = new AdaptableLinear(h, kv, false);
        v_proj = new AdaptableLinear(h, kv, false); o_proj = new AdaptableLinear(h, h, false);
        RegisterComponents();
    }
}

sealed class ToyMlp : nn.Module
{
#pragma warning disable IDE1006
    public AdaptableLinear gate_proj, up_proj, down_proj;
#pragma warning restore IDE1006
    public ToyMlp(int h, int i) : base("ToyMlp")
    {
        gate_proj = new AdaptableLinear(h, i, false); up_proj = new AdaptableLinear(h, i, false); down_proj = new AdaptableLinear(i, h, false);
        RegisterComponents();
    }
}

sealed class ToyBlock : nn.Module
{
#pragma warning disable IDE1006
    public ToyAttention self_attn; public ToyMlp mlp; public TorchSharp.Modules.Parameter norm;
#pragma warning restore IDE1006
    public ToyBlock(int h, int kv, int i) : base("ToyBlock")
    {
        self_attn = new ToyAttention(h, kv); mlp = new ToyMlp(h, i);
        norm = new TorchSharp.Modules.Parameter(ones(h));
        RegisterComponents();
    }
}

sealed class ToyInner : nn.Module
{
#pragma warning disable IDE1006
    public TorchSharp.Modules.Parameter embed_tokens; public TorchSharp.Modules.ModuleList<ToyBlock> layers;
#pragma warning restore IDE1006
    public ToyInner(int layersCount, int h, int kv, int i) : base("ToyInner")
    {
        embed_tokens = new TorchSharp.Modules.Parameter(randn(10, h));
        layers = new TorchSharp.Modules.ModuleList<ToyBlock>(Enumerable.Range(0, layersCount).Select(_ => new ToyBlock(h, kv, i)).ToArray());
        RegisterComponents();
    }
}

/// <summary>model.layers.N.self_attn.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,down}_proj, lm_head; forward chains a few of them.</summary>
sealed class ToyModel : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public ToyInner model; public AdaptableLinear lm_head;
#pragma warning restore IDE1006
    public ToyModel(int layersCount = 2, int h = 16, int kv = 8, int i = 24, long seed = 1) : base("ToyModel")
    {
        model = new ToyInner(layersCount, h, kv, i);
        lm_head = new AdaptableLinear(h, 10, false);
        RegisterComponents();
        using var _ = no_grad();
        using var g = new Generator((ulong)seed);   // own generator: tests run in parallel and share the global one
        foreach (var p in parameters()) p.copy_(randn(p.shape, generator: g).mul_(0.2));
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        foreach (var b in model.layers)
        {
            var a = b.self_attn;
            var q = a.q_proj.forward(x);
            var v = a.v_proj.forward(x);
            var k = a.k_proj.forward(x);
            x = x + a.o_proj.forward(q * cat([v, k], -1).tanh());
            x = x + b.mlp.down_proj.forward(b.mlp.gate_proj.forward(x).sigmoid() * b.mlp.up_proj.forward(x));
        }
        return lm_head.forward(x).MoveToOuterDisposeScope();
    }
}
