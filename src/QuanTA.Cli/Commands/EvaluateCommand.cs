using System.CommandLine;
using System.Text.Json;
using QuanTA.MLNet;

namespace QuanTA.Cli.Commands;

/// <summary><c>quanta evaluate</c>: a saved model .zip + TSV/CSV data → metrics as JSON on stdout.</summary>
public static class EvaluateCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var modelPath = new Option<string>("--model") { Description = "A model .zip saved by quanta finetune or mlContext.Model.Save.", Required = true };
        var dataPath = new Option<string>("--data") { Description = "Evaluation data: .tsv or .csv with a header row.", Required = true };
        var baseModel = new Option<string?>("--base-model") { Description = "Base model folder, if it moved since training (its fingerprint is checked)." };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var cmd = new Command("evaluate", "Evaluate a saved QuanTA model on TSV/CSV data; prints metrics as JSON.") { modelPath, dataPath, baseModel, device };
        cmd.SetAction(r => CliRun.Run(() =>
        {
            var ml = CliRun.Context(r.GetValue(device)!, 1);
            ml.RegisterQuanTA(r.GetValue(baseModel));
            var model = ml.Model.Load(r.GetValue(modelPath)!, out _);
            var quanta = TextData.FindQuanTA(model);
            try
            {
                var data = TextData.IsChatFile(r.GetValue(dataPath)!) ? ml.Data.LoadFromChatJsonl(r.GetValue(dataPath)!) : TextData.Load(ml, r.GetValue(dataPath)!);
                var o = quanta.Options;
                var scored = model.Transform(data);
                object metrics;
                if (o.Task == QuanTATask.TextClassification)
                {
                    var m = ml.MulticlassClassification.Evaluate(scored, o.LabelColumnName, o.ScoreColumnName);
                    metrics = new
                    {
                        task = "classification", rows = m.ConfusionMatrix.Counts.Sum(row => row.Sum()),
                        microAccuracy = m.MicroAccuracy, macroAccuracy = m.MacroAccuracy, logLoss = m.LogLoss,
                        logLossReduction = m.LogLossReduction, perClassLogLoss = m.PerClassLogLoss,
                        classes = quanta.ClassNames, confusionMatrix = m.ConfusionMatrix.Counts,
                    };
                }
                else
                {
                    var g = GenerationMetrics.Evaluate(scored, o.TargetTextColumnName, o.GeneratedTextColumnName);
                    metrics = new { task = "generation", rows = g.Count, exactMatch = g.ExactMatch, f1 = g.F1, perplexity = quanta.Perplexity(data) };
                }
                Console.Out.WriteLine(JsonSerializer.Serialize(metrics, new JsonSerializerOptions { WriteIndented = true }));
                return 0;
            }
            finally { quanta.Dispose(); }
        }));
        return cmd;
    }
}
