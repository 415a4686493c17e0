using System.CommandLine;
using System.Text.Json.Nodes;
using Microsoft.ML;
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
        var failOnUnseen = new Option<bool>("--fail-on-unseen-labels") { Description = "Exit 1 when a row's label was never seen in training (default: warn on stderr, count them in unseenLabelRows and leave them out of the metrics)." };
        var cmd = new Command("evaluate", "Evaluate a saved QuanTA model on TSV/CSV data; prints metrics as JSON.") { modelPath, dataPath, baseModel, device, failOnUnseen };
        cmd.SetAction(r => CliRun.Run(() =>
        {
            var ml = CliRun.Context(r.GetValue(device)!, 1);
            ml.RegisterQuanTA(r.GetValue(baseModel));
            var model = ml.Model.LoadWithQuanTA(ml, r.GetValue(modelPath)!, out _);   // a damaged or foreign zip: "corrupt or not a QuanTA model"
            var quanta = TextData.FindQuanTA(model, r.GetValue(modelPath)!);
            try
            {
                var path = r.GetValue(dataPath)!;
                var data = TextData.IsChatFile(path) ? ml.Data.LoadFromChatJsonl(path) : TextData.Load(ml, path);
                var o = quanta.Options;
                if (CountRows(data) == 0)
                    throw new InvalidDataException($"--data '{path}' has no data rows (a header only?): there is nothing to evaluate. Give --data a file with at least one row.");
                var report = o.Task == QuanTATask.TextClassification
                    ? Classification(ml, model, quanta, data, path, r.GetValue(failOnUnseen))
                    : Generation(model, quanta, data);
                Console.Out.WriteLine(report.ToJson());
                return 0;
            }
            finally { quanta.Dispose(); }
        }));
        return cmd;
    }

    static EvaluationReport Classification(MLContext ml, ITransformer model, QuanTAFineTuneTransformer quanta, IDataView data, string path, bool failOnUnseen)
    {
        var o = quanta.Options;
        var census = LabelCensus.Take(data, o.LabelColumnName, quanta.ClassNames, path);
        if (census.UnseenRows == census.Rows)
            throw new InvalidDataException($"--data '{path}': every row ({census.Rows}) has a label never seen in training " +
                $"({LabelCensus.List(census.UnseenLabels)}); the model knows {LabelCensus.List(quanta.ClassNames)}. " +
                $"Check that --data is a test set for this model and that its '{o.LabelColumnName}' column holds these labels.");
        if (census.UnseenRows > 0)
        {
            var what = $"{census.UnseenRows} of {census.Rows} rows of '{path}' have labels never seen in training ({LabelCensus.List(census.UnseenLabels)})";
            if (failOnUnseen)
                throw new InvalidDataException($"{what}; --fail-on-unseen-labels is set. Remove those rows, or drop the flag to evaluate the other rows.");
            Console.Error.WriteLine($"warning: {what}; they are left out of the metrics (counted in unseenLabelRows). Pass --fail-on-unseen-labels to make this an error.");
        }
        var m = ml.MulticlassClassification.Evaluate(model.Transform(data), o.LabelColumnName, o.ScoreColumnName);
        bool oneClass = census.SeenLabelsPresent.Count == 1;
        var report = new EvaluationReport()
            .Add("task", "classification")
            .Add("rows", m.ConfusionMatrix.Counts.Sum(row => row.Sum()))
            .Add("dataRows", census.Rows)
            .Add("unseenLabelRows", census.UnseenRows)
            .Add("unseenLabels", new JsonArray([.. census.UnseenLabels.Select(l => (JsonNode?)l)]))
            .Metric("microAccuracy", m.MicroAccuracy)
            .Metric("macroAccuracy", m.MacroAccuracy)
            .Metric("logLoss", m.LogLoss, "a row's true class got probability 0")
            .Metric("logLossReduction", m.LogLossReduction, oneClass
                ? "the test set has one class, so the prior's log-loss is 0 and a reduction relative to it is undefined"
                : null)
            .Metrics("perClassLogLoss", m.PerClassLogLoss, quanta.ClassNames,
                i => i < m.ConfusionMatrix.Counts.Count && m.ConfusionMatrix.Counts[i].Sum() == 0 ? "the class has no rows in the test set" : null)
            .Add("classes", new JsonArray([.. quanta.ClassNames.Select(c => (JsonNode?)c)]))
            .Add("classesInTestSet", new JsonArray([.. census.SeenLabelsPresent.Select(c => (JsonNode?)c)]))
            .Add("confusionMatrix", new JsonArray([.. m.ConfusionMatrix.Counts.Select(row => (JsonNode?)new JsonArray([.. row.Select(c => (JsonNode?)c)]))]));
        if (oneClass)
            report.Note("singleClass", $"the test set has one class ('{census.SeenLabelsPresent[0]}'): accuracy is the recall of that class only; " +
                "metrics relative to the class prior are undefined. Add rows of the other classes for a full evaluation.");
        return report;
    }

    static EvaluationReport Generation(ITransformer model, QuanTAFineTuneTransformer quanta, IDataView data)
    {
        var o = quanta.Options;
        var g = GenerationMetrics.Evaluate(model.Transform(data), o.TargetTextColumnName, o.GeneratedTextColumnName);
        return new EvaluationReport()
            .Add("task", "generation").Add("rows", g.Count)
            .Metric("exactMatch", g.ExactMatch).Metric("f1", g.F1)
            .Metric("perplexity", quanta.Perplexity(data), "the model gave a target token probability 0 (or no row has target tokens)");
    }

    static long CountRows(IDataView data)
    {
        if (data.GetRowCount() is long n) return n;
        long rows = 0;
        using var cursor = data.GetRowCursor([]);
        while (cursor.MoveNext()) rows++;
        return rows;
    }
}
