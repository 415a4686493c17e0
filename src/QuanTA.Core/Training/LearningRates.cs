namespace QuanTA.Core.Training;

/// <summary>
/// Learning-rate multipliers per optimizer step, the same formulas as Hugging Face <c>get_linear_schedule_with_warmup</c>,
/// <c>get_cosine_schedule_with_warmup</c> (0.5 cycles) and <c>get_constant_schedule_with_warmup</c>. The trainer computes the
/// rate itself each step (no scheduler object), so resuming needs only the step count.
/// </summary>
public static class LearningRates
{
    /// <summary>
    /// Multiplier of the peak rate for the optimizer step with zero-based index <paramref name="step"/> (HF's scheduler step
    /// count before that optimizer step). Warmup is linear from 0: step 0 of a warmed-up run has rate 0, as in HF.
    /// </summary>
    public static double Factor(LearningRateSchedule schedule, long step, long warmupSteps, long totalSteps)
    {
        if (step < warmupSteps) return (double)step / Math.Max(1, warmupSteps);
        var progress = (double)(step - warmupSteps) / Math.Max(1, totalSteps - warmupSteps);
        return schedule switch
        {
            LearningRateSchedule.Linear => Math.Max(0.0, (double)(totalSteps - step) / Math.Max(1, totalSteps - warmupSteps)),
            LearningRateSchedule.Cosine => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * progress))),
            LearningRateSchedule.Constant => 1.0,
            _ => throw new ArgumentOutOfRangeException(nameof(schedule), schedule, "Unknown learning-rate schedule."),
        };
    }

    /// <summary>Warmup steps for a run of <paramref name="totalSteps"/>: <see cref="TrainerOptions.WarmupSteps"/> if set, else ceil(ratio × total) as HF does.</summary>
    public static long WarmupSteps(TrainerOptions options, long totalSteps)
        => options.WarmupSteps > 0 ? options.WarmupSteps : (long)Math.Ceiling(options.WarmupRatio * totalSteps);

    /// <summary>The learning rate of zero-based optimizer step <paramref name="step"/> under <paramref name="options"/>.</summary>
    public static double At(TrainerOptions options, long step, long totalSteps)
        => options.LearningRate * Factor(options.Schedule, step, WarmupSteps(options, totalSteps), totalSteps);
}
