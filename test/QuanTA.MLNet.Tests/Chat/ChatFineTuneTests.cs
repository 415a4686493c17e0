using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Chat;
using QuanTA.MLNet.Engine;

namespace QuanTA.MLNet.Tests.Chat;

/// <summary>Chat fine-tuning: rendering with the template, loss on every assistant turn only, truncation of long conversations.</summary>
public class ChatFineTuneTests(ChatFixture f) : IClassFixture<ChatFixture>
{
    [Fact]
    public void TheAnswersAreLearnedAndTransformAnswersTheLastQuestion()
    {
        var losses = f.Model.TrainingLosses;
        Assert.True(losses.TakeLast(2).Average() < losses.Take(2).Average() - 1.0,
            $"loss fell only from {losses.Take(2).Average():F3} to {losses.TakeLast(2).Average():F3}");
        // Transform on the training conversations answers the last user turn (the trailing assistant turn is the reference).
        var generated = f.Model.Transform(f.Train).GetColumn<string>("GeneratedText").ToList();
        var targets = f.Train.GetColumn<string>("Target").ToList();
        double correct = generated.Zip(targets).Count(p => p.First.Trim() == p.Second.Trim()) / (double)generated.Count;
        Assert.True(correct >= 0.75, $"{correct:P0} of the last answers reproduced; e.g. '{generated[0]}' for '{targets[0]}'");
    }

    [Fact]
    public void LossFallsOnEveryAssistantTurnAndNothingElse()
    {
        using var model = FineTuneModel.Create(ChatFixture.Options(), 0, TorchSharp.torch.CPU, seed: 1);
        var conversation = ChatFixture.Conversations(1)[0];
        var row = model.Chat.EncodeForTraining(conversation);
        Assert.Equal(row.Ids, model.Tokenizer.Encode(model.Chat.Template.Render(conversation, false), addSpecialTokens: false));
        var mask = row.LossMask!;
        // The masked tokens form one run per assistant turn; each run decodes to " <answer>" and ends with eos.
        var runs = new List<List<int>>();
        for (int i = 0; i < mask.Length; i++)
            if (mask[i]) { if (i == 0 || !mask[i - 1]) runs.Add([]); runs[^1].Add(row.Ids[i]); }
        var answers = conversation.Where(t => t.IsAssistant).Select(t => t.Content).ToList();
        Assert.Equal(answers.Count, runs.Count);
        for (int k = 0; k < runs.Count; k++)
        {
            Assert.Equal(" " + answers[k], model.Tokenizer.Decode(runs[k]));
            Assert.Equal(model.Tokenizer.EosId, runs[k][^1]);
        }
        // The loss is the mean next-token NLL over exactly those tokens, computed here by hand from the logits.
        using var scope = TorchSharp.torch.NewDisposeScope();
        double loss = model.LanguageModelLoss([row]).item<float>();
        var ids = TorchSharp.torch.tensor(row.Ids.Select(i => (long)i).ToArray(), [1, row.Ids.Length]);
        var logp = TorchSharp.torch.nn.functional.log_softmax(
            ((TorchSharp.torch.nn.Module<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>)model.Module).forward(ids), -1);
        double sum = 0; int n = 0;
        for (int t = 1; t < row.Ids.Length; t++)
            if (mask[t]) { sum -= logp[0, t - 1, row.Ids[t]].item<float>(); n++; }
        Assert.Equal(sum / n, loss, 1e-4);
    }

    [Fact]
    public void LongConversationsLoseTheirOldestExchangesOrAreRefused()
    {
        var conversation = ChatFixture.Conversations(1)[0];
        int fullLength;
        using (var probe = FineTuneModel.Create(ChatFixture.Options(), 0, TorchSharp.torch.CPU, seed: 1))
            fullLength = probe.Chat.EncodeForTraining(conversation).Ids.Length;
        var o = ChatFixture.Options();
        o.MaxSequenceLength = fullLength - 2;                                            // one exchange too many
        using var model = FineTuneModel.Create(o, 0, TorchSharp.torch.CPU, seed: 1);
        var row = model.Chat.EncodeForTraining(conversation);
        Assert.True(row.Truncated);
        Assert.True(row.Ids.Length <= o.MaxSequenceLength);
        var kept = model.Tokenizer.Decode(row.Ids);
        Assert.StartsWith(ChatFixture.System, kept);                                   // the system prompt stays
        Assert.Contains("Q: " + conversation[3].Content, kept);                         // the last exchange stays
        Assert.DoesNotContain("Q: " + conversation[1].Content + "\n", kept);            // the first one went
        Assert.Equal(1, CountRuns(row.LossMask!));

        // Truncation = Error: Fit refuses the row and says what to change.
        var ml = new MLContext(seed: 1);
        o.Truncation = TruncationPolicy.Error; o.Epochs = 1;
        var e = Assert.ThrowsAny<Exception>(() => ml.Transforms.QuanTAFineTune(o).Fit(ml.Data.LoadFromChatJsonl(f.Jsonl)));
        Assert.Contains("MaxSequenceLength", Inner(e).Message);
        Assert.Contains("Row ", Inner(e).Message);
    }

    [Fact]
    public void SavedChatModelsLoadAndAnswerAlike()
    {
        var fresh = new MLContext().RegisterQuanTA();
        using var loaded = (QuanTAFineTuneTransformer)fresh.Model.Load(f.Zip, out _);
        Assert.Equal(ChatColumns.Messages, loaded.Options.MessagesColumnName);
        Assert.Equal(ChatFixture.Template, loaded.Options.ChatTemplate);
        var view = fresh.Data.LoadFromChatJsonl(f.Jsonl);
        Assert.Equal(f.Model.Transform(f.Train).GetColumn<string>("GeneratedText"), loaded.Transform(view).GetColumn<string>("GeneratedText"));
    }

    [Fact]
    public void AMissingTemplateIsNamedBeforeTraining()
    {
        var o = ChatFixture.Options();
        o.ChatTemplate = null;                                                           // llama-tiny has no chat_template
        var ml = new MLContext(seed: 1);
        var e = Assert.ThrowsAny<Exception>(() => ml.Transforms.QuanTAFineTune(o).Fit(ml.Data.LoadFromChatJsonl(f.Jsonl)));
        Assert.Contains("chat_template", Inner(e).Message);
        Assert.Contains("ChatTemplate", Inner(e).Message);
    }

    static int CountRuns(bool[] mask) => mask.Where((m, i) => m && (i == 0 || !mask[i - 1])).Count();

    static Exception Inner(Exception e) => e is System.Reflection.TargetInvocationException { InnerException: { } i } ? i : e;
}
