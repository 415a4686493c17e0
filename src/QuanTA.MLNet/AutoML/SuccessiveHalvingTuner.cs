namespace QuanTA.MLNet.AutoML;

/// <summary>What the tuner wants run next: configuration <see cref="ConfigId"/> (new when <see cref="IsNew"/>) at rung
/// <see cref="Rung"/> for <see cref="Epochs"/> epochs.</summary>
/// <param name="ConfigId">Configuration number; for a new one, the number the caller must give the configuration it draws.</param>
/// <param name="Rung">Successive-halving rung.</param>
/// <param name="Epochs">Epochs (the resource) of that rung.</param>
/// <param name="IsNew">True: draw a new configuration; false: promote an existing one.</param>
public readonly record struct SweepJob(int ConfigId, int Rung, int Epochs, bool IsNew);

/// <summary>
/// Asynchronous successive halving (ASHA, Li et al. 2020) with epochs as the resource. Rungs train for
/// <c>min·η^k</c> epochs (the last rung = max). Whenever a configuration is among the best 1/η of those finished at its rung
/// and not yet promoted, it is promoted (re-trained with the next rung's epochs, from scratch so the schedule fits the new
/// length); otherwise a new configuration starts at rung 0. Compared with a grid at full epochs, most configurations cost only
/// the smallest resource, so a fixed budget covers η-fold more of them, and the budget is spent on the promising ones. Failed
/// trials count as the worst score of their rung (never promoted). Deterministic: decisions depend only on the reported scores.
/// Several jobs may be pending at once (parallel workers): <see cref="Next"/> hands out a new configuration number or a
/// promotion without waiting for earlier jobs, promotions are decided on completed results only (a pending trial is neither
/// counted in its rung's quota nor promotable), and a promotion handed out is never offered twice.
/// </summary>
public sealed class SuccessiveHalvingTuner
{
    readonly List<Dictionary<int, double>> _scores = [];   // per rung: config → score (lower is better internally)
    readonly List<HashSet<int>> _promoted = [];
    int _nextConfig;
    bool _exhausted;

    /// <summary>Creates the tuner.</summary>
    /// <param name="minEpochs">Epochs of rung 0 (≥ 1).</param>
    /// <param name="maxEpochs">Epochs of the last rung (≥ <paramref name="minEpochs"/>).</param>
    /// <param name="eta">Reduction factor η ≥ 2: the best 1/η of a rung are promoted, with η times more epochs. Default 3.</param>
    /// <param name="greaterIsBetter">True when a larger metric is better.</param>
    public SuccessiveHalvingTuner(int minEpochs, int maxEpochs, int eta = 3, bool greaterIsBetter = false)
    {
        if (minEpochs < 1) throw new ArgumentOutOfRangeException(nameof(minEpochs), minEpochs, "The smallest resource must be at least 1 epoch.");
        if (maxEpochs < minEpochs) throw new ArgumentOutOfRangeException(nameof(maxEpochs), maxEpochs, $"Max epochs must be ≥ min epochs ({minEpochs}).");
        if (eta < 2) throw new ArgumentOutOfRangeException(nameof(eta), eta, "The reduction factor η must be at least 2.");
        Eta = eta; GreaterIsBetter = greaterIsBetter;
        var rungs = new List<int>();
        for (long r = minEpochs; r < maxEpochs; r *= eta) rungs.Add((int)r);
        rungs.Add(maxEpochs);
        RungEpochs = rungs;
        foreach (var _ in rungs) { _scores.Add([]); _promoted.Add([]); }
    }

    /// <summary>Epochs of each rung.</summary>
    public IReadOnlyList<int> RungEpochs { get; }
    /// <summary>Reduction factor η.</summary>
    public int Eta { get; }
    /// <summary>True when a larger metric is better.</summary>
    public bool GreaterIsBetter { get; }

    /// <summary>The next trial to run, or null when there is nothing left (no promotion possible and no new configurations).</summary>
    public SweepJob? Next()
    {
        for (int k = RungEpochs.Count - 2; k >= 0; k--)
        {
            var done = _scores[k];
            int quota = done.Count / Eta;
            foreach (var (config, _) in done.OrderBy(kv => kv.Value).ThenBy(kv => kv.Key).Take(quota))
                if (!_promoted[k].Contains(config) && !double.IsPositiveInfinity(done[config]))
                {
                    _promoted[k].Add(config);
                    return new SweepJob(config, k + 1, RungEpochs[k + 1], IsNew: false);
                }
        }
        if (_exhausted) return null;
        return new SweepJob(_nextConfig++, 0, RungEpochs[0], IsNew: true);
    }

    /// <summary>Records the outcome of <paramref name="job"/> (in any order when several are pending): its metric, or null for a failed trial.</summary>
    public void Report(SweepJob job, double? metric)
    {
        if (job.ConfigId >= _nextConfig || job.Rung >= RungEpochs.Count)
            throw new InvalidOperationException($"Configuration {job.ConfigId} at rung {job.Rung} was never handed out by Next().");
        double score = metric is double m && double.IsFinite(m) ? (GreaterIsBetter ? -m : m) : double.PositiveInfinity;
        _scores[job.Rung][job.ConfigId] = score;
    }

    /// <summary>Tells the tuner that no new configuration can be drawn (the space is used up); only promotions remain.</summary>
    public void MarkExhausted() => _exhausted = true;

    /// <summary>Withdraws a job that was not run (e.g. the time budget ran out): a promotion can be offered again; a new
    /// configuration's number stays used.</summary>
    public void Withdraw(SweepJob job)
    {
        if (!job.IsNew) _promoted[job.Rung - 1].Remove(job.ConfigId);
    }
}
