using Microsoft.ML;

namespace QuanTA.MLNet.Tests;

public class SmokeTests
{
    [Fact]
    public void MLContextIsAvailable() => Assert.NotNull(new MLContext(seed: 1).Transforms);
}
