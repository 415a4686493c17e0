using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>Numerical rank of a matrix (for reports and tests), computed like NumPy's <c>matrix_rank</c>:
/// singular values (in fp64) above <c>σ_max · max(rows, cols) · ε</c>, with ε the machine epsilon of the matrix's own dtype
/// (fp32 matrices such as ΔW carry fp32 round-off).</summary>
public static class MatrixRank
{
    /// <summary>The numerical rank of a 2-D tensor; <paramref name="relativeTolerance"/> overrides max(rows, cols)·ε.</summary>
    public static long Of(Tensor matrix, double? relativeTolerance = null)
    {
        ArgumentNullException.ThrowIfNull(matrix);
        if (matrix.dim() != 2) throw new ArgumentException($"Rank needs a 2-D matrix; got shape [{string.Join(", ", matrix.shape)}].", nameof(matrix));
        using var scope = NewDisposeScope();
        double eps = matrix.dtype switch
        {
            ScalarType.Float64 => 2.220446049250313e-16,
            ScalarType.BFloat16 => 7.8125e-3,
            ScalarType.Float16 => 9.765625e-4,
            _ => 1.1920928955078125e-7,
        };
        var s = linalg.svdvals(matrix.detach().to_type(ScalarType.Float64));
        double max = s.max().item<double>();
        if (max == 0) return 0;
        double tol = max * (relativeTolerance ?? Math.Max(matrix.shape[0], matrix.shape[1]) * eps);
        return (s > tol).sum().item<long>();
    }

    /// <summary>Singular values of a 2-D tensor in descending order (fp64 array), e.g. for spectra plots.</summary>
    public static double[] SingularValues(Tensor matrix)
    {
        using var scope = NewDisposeScope();
        return linalg.svdvals(matrix.detach().to_type(ScalarType.Float64)).data<double>().ToArray();
    }
}
