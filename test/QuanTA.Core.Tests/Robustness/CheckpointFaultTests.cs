using System.Security.Cryptography;
using System.Text.Json.Nodes;
using CsCheck;
using QuanTA.Core.Tests.Training;
using QuanTA.Core.Training;
using QuanTA.Tests.Robustness;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Robustness;

/// <summary>
/// Checkpoint folders damaged at random: <see cref="Checkpoints.FindLatestValid"/> skips them, <see cref="Checkpoints.Verify"/>
/// and <see cref="Checkpoints.Load"/> refuse them with <see cref="CheckpointCorruptException"/> naming the folder. Also with
/// the hashes in trainer_state.json rewritten to match the damaged files, so the damage reaches the safetensors, optimizer and
/// RNG readers behind the hash check (a checkpoint written by a buggy or foreign program).
/// </summary>
[Collection(TrainingCollection.Name)]
public class CheckpointFaultTests : IDisposable
{
    static readonly string[] Files = [Checkpoints.AdapterFile, Checkpoints.OptimizerFile, Checkpoints.RngFile, Checkpoints.StateFile];

    readonly TempDir _root = new();
    readonly ToyNet _net = new(seed: 11);
    readonly List<(string name, Tensor tensor)> _tensors;
    readonly TorchSharp.Modules.AdamW _optimizer;
    readonly string _checkpoint;
    readonly Dictionary<string, byte[]> _originals;

    public CheckpointFaultTests()
    {
        _tensors = _net.Trainable().Select(p => (p.name, (Tensor)p.parameter)).ToList();
        var adam = torch.optim.AdamW(_net.Trainable().Select(p => p.parameter), lr: 1e-3);
        using (var loss = _net.forward(ones(4, 8)).sum()) loss.backward();
        adam.step();                                                        // AdamW has state to save
        _optimizer = adam;
        var state = new TrainerState { Step = 3, TotalSteps = 10, BatchesPerEpoch = 5, GradientAccumulationSteps = 1, Parameters = Checkpoints.Describe(_tensors) };
        _checkpoint = Checkpoints.Save(_root.Path, state, _tensors, adam, Checkpoints.CaptureRng());
        _originals = Files.ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(_checkpoint, f)));
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        _net.Dispose();
        _root.Dispose();
    }

    /// <summary>Restores the checkpoint, then damages <paramref name="file"/>; with <paramref name="rehash"/> its recorded hash is updated.</summary>
    long Damage(string file, Fault fault, bool rehash)
    {
        foreach (var (f, bytes) in _originals) File.WriteAllBytes(Path.Combine(_checkpoint, f), bytes);
        var damaged = fault.Apply(_originals[file]);
        File.WriteAllBytes(Path.Combine(_checkpoint, file), damaged);
        if (rehash && file != Checkpoints.StateFile)
        {
            var state = JsonNode.Parse(_originals[Checkpoints.StateFile])!;
            state["Sha256"]![file] = Convert.ToHexString(SHA256.HashData(damaged));
            File.WriteAllText(Path.Combine(_checkpoint, Checkpoints.StateFile), state.ToJsonString());
        }
        return damaged.Length;
    }

    void FindAndLoad()
    {
        var found = Checkpoints.FindLatestValid(_root.Path);
        Assert.True(found is null || found == _checkpoint);
        try { Checkpoints.Load(_checkpoint, _tensors, _optimizer, restoreRng: true); }
        catch (InvalidOperationException e) when (e.Message.Contains("was saved for other trainable parameters", StringComparison.Ordinal))
        {
            // trainer_state.json's parameter list itself was changed: the existing clear refusal (names the checkpoint and both lists)
            throw new CheckpointCorruptException(_checkpoint, e.Message, e);
        }
    }

    [Fact]
    public void ADamagedCheckpointIsSkippedAndRefusedByName()
    {
        FindAndLoad();   // the undamaged checkpoint loads
        var gen = Gen.Int[0, Files.Length - 1].SelectMany(i => (Files[i] == Checkpoints.StateFile ? FaultGen.ForJson : FaultGen.ForBytes).Select(f => (Files[i], f)));
        ReaderProperty.Check(gen, c =>
        {
            long size = Damage(c.Item1, c.f, rehash: false);
            return (Path.GetFileName(_checkpoint), size, FindAndLoad);
        }, iter: 150);
    }

    [Fact]
    public void ADamagedCheckpointWithMatchingHashesIsStillRefusedByName()
    {
        var files = new[] { Checkpoints.AdapterFile, Checkpoints.OptimizerFile, Checkpoints.RngFile };
        var gen = Gen.Int[0, files.Length - 1].SelectMany(i =>
            (files[i] == Checkpoints.AdapterFile ? FaultGen.ForSafetensors : FaultGen.ForBytes).Select(f => (files[i], f)));
        ReaderProperty.Check(gen, c =>
        {
            long size = Damage(c.Item1, c.f, rehash: true);
            return (Path.GetFileName(_checkpoint), size, FindAndLoad);
        }, iter: 150);
    }

    [Fact]
    public void AGeneratorStateOfTheWrongSizeIsRefusedInsteadOfAbortingTheProcess()
    {
        // Before: libtorch's "Expected a CPUGeneratorImplState of size 5056 but found … 5061" terminated the test host.
        Damage(Checkpoints.RngFile, new Insert(int.MaxValue, 5), rehash: true);   // 5 bytes inserted, hash updated
        var e = Assert.Throws<CheckpointCorruptException>(() => Checkpoints.Load(_checkpoint, _tensors, _optimizer));
        Assert.Contains(Checkpoints.RngFile, e.Message);
    }

    [Theory]
    [InlineData("Parameters")]   // before: ArgumentNullException from LINQ
    [InlineData("Sha256")]       // before: NullReferenceException
    [InlineData("History")]
    public void AStateFileWithANullListIsRefusedByName(string key)
    {
        var state = JsonNode.Parse(_originals[Checkpoints.StateFile])!;
        state[key] = null;
        File.WriteAllText(Path.Combine(_checkpoint, Checkpoints.StateFile), state.ToJsonString());
        var e = Assert.Throws<CheckpointCorruptException>(() => Checkpoints.Load(_checkpoint, _tensors, _optimizer));
        Assert.Contains(Checkpoints.StateFile, e.Message);
        Assert.Null(Checkpoints.FindLatestValid(_root.Path));
    }
}
