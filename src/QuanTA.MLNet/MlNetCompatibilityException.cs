namespace QuanTA.MLNet;

/// <summary>
/// Thrown when the installed ML.NET lacks an internal member QuanTA.MLNet needs to save or load models through
/// <c>mlContext.Model</c> (ML.NET offers no public API for third-party saveable transformers).
/// </summary>
public sealed class MlNetCompatibilityException : Exception
{
    /// <summary>Creates the exception.</summary>
    public MlNetCompatibilityException(string message, string missingMember, string mlNetVersion) : base(message)
    {
        MissingMember = missingMember;
        MlNetVersion = mlNetVersion;
    }

    /// <summary>The internal ML.NET member that was not found.</summary>
    public string MissingMember { get; }

    /// <summary>The Microsoft.ML version found at run time.</summary>
    public string MlNetVersion { get; }
}
