using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Data;

/// <summary>
/// The lazy output of <see cref="QuanTAFineTuneTransformer.Transform"/>: input columns pass through, output columns are
/// computed in batches of <c>InferenceBatchSize</c> rows by a second, look-ahead cursor over the same (unshuffled) input,
/// so nothing is materialized and the model sees full batches.
/// </summary>
internal sealed class QuanTADataView : IDataView
{
    readonly QuanTAFineTuneTransformer _parent;
    readonly IDataView _source;

    public QuanTADataView(QuanTAFineTuneTransformer parent, IDataView source)
    {
        _parent = parent; _source = source;
        Schema = parent.GetOutputSchema(source.Schema);   // also checks the input columns
    }

    /// <summary>Row order must match between the pass-through and the look-ahead cursor, so shuffling is off.</summary>
    public bool CanShuffle => false;
    public DataViewSchema Schema { get; }
    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var active = columnsNeeded.Select(c => c.Index).ToHashSet();
        int nIn = _source.Schema.Count;
        var inputs = active.Where(i => i < nIn).Select(i => _source.Schema[i]).ToList();
        bool outputs = active.Any(i => i >= nIn);
        var ahead = outputs ? _source.GetRowCursor(_parent.InputColumnNames.Select(n => _source.Schema[n])) : null;
        return new Cursor(this, _source.GetRowCursor(inputs), ahead, active);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    sealed class Cursor : DataViewRowCursor
    {
        readonly QuanTADataView _view;
        readonly DataViewRowCursor _input;
        readonly DataViewRowCursor? _ahead;
        readonly HashSet<int> _active;
        readonly OutputGetters _outputs;
        readonly ValueGetter<ReadOnlyMemory<char>>? _text, _second;
        long _row = -1, _aheadRow = -1, _batchStart;
        float[][]? _scores; string[]? _texts;
        int _batchCount;

        public Cursor(QuanTADataView view, DataViewRowCursor input, DataViewRowCursor? ahead, HashSet<int> active)
        {
            _view = view; _input = input; _ahead = ahead; _active = active;
            _outputs = new OutputGetters(view._parent, view._source.Schema.Count, CurrentScores, CurrentText);
            if (ahead is not null) (_text, _second) = OutputGetters.TextInputs(ahead, view._parent);
        }

        public override DataViewSchema Schema => _view.Schema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (!_input.MoveNext()) return false;
            _row++;
            return true;
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active.Contains(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was created.");
            return column.Index < _view._source.Schema.Count
                ? _input.GetGetter<TValue>(_view._source.Schema[column.Index])
                : _outputs.Get<TValue>(column);
        }

        float[] CurrentScores() { Ensure(); return _scores![_row - _batchStart]; }
        string CurrentText() { Ensure(); return _texts![_row - _batchStart]; }

        /// <summary>Computes the batch holding the current row: advances the look-ahead cursor to it, reads up to a batch of texts.</summary>
        void Ensure()
        {
            if (_row < 0) throw new InvalidOperationException("Call MoveNext before reading values.");
            if (_batchCount > 0 && _row >= _batchStart && _row < _batchStart + _batchCount) return;
            while (_aheadRow < _row - 1) { _ahead!.MoveNext(); _aheadRow++; }   // rows whose outputs were never read
            var rows = new List<(string, string?)>();
            ReadOnlyMemory<char> t = default, t2 = default;
            while (rows.Count < _view._parent.InferenceBatchSize && _ahead!.MoveNext())
            {
                _aheadRow++;
                _text!(ref t);
                string? second = null;
                if (_second is not null) { _second(ref t2); second = t2.ToString(); }
                rows.Add((t.ToString(), second));
            }
            if (rows.Count == 0) throw new InvalidOperationException("The input data view returned fewer rows to the look-ahead cursor.");
            (_scores, _texts) = _view._parent.Predict(rows);
            _batchStart = _row; _batchCount = rows.Count;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) { _input.Dispose(); _ahead?.Dispose(); }
            base.Dispose(disposing);
        }
    }
}

/// <summary>Getters for the transformer's output columns, shared by the batched cursor and the row-to-row mapper.</summary>
internal sealed class OutputGetters(QuanTAFineTuneTransformer parent, int inputCount, Func<float[]> scores, Func<string> text)
{
    /// <summary>Getters of the transformer's text input column(s) on <paramref name="row"/>: the text, and the second text or null.</summary>
    public static (ValueGetter<ReadOnlyMemory<char>> Text, ValueGetter<ReadOnlyMemory<char>>? Second) TextInputs(DataViewRow row, QuanTAFineTuneTransformer parent)
    {
        var names = parent.InputColumnNames.ToArray();
        var text = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[names[0]]);
        return (text, names.Length > 1 ? row.GetGetter<ReadOnlyMemory<char>>(row.Schema[names[1]]) : null);
    }

    /// <summary>A getter for output column <paramref name="column"/> (index ≥ the input column count).</summary>
    public ValueGetter<TValue> Get<TValue>(DataViewSchema.Column column)
    {
        int k = column.Index - inputCount;
        if (parent.Task == QuanTATask.TextClassification && k == 0)
        {
            if (typeof(TValue) != typeof(VBuffer<float>)) throw TypeMismatch<TValue>(column, "VBuffer<float>");
            ValueGetter<VBuffer<float>> g = (ref VBuffer<float> dst) =>
            {
                var s = scores();
                var editor = VBufferEditor.Create(ref dst, s.Length);
                s.CopyTo(editor.Values);
                dst = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)g;
        }
        if (parent.Task == QuanTATask.TextClassification && k == 1)
        {
            if (typeof(TValue) != typeof(uint)) throw TypeMismatch<TValue>(column, "uint (key)");
            ValueGetter<uint> g = (ref uint dst) =>
            {
                var s = scores();
                int best = 0;
                for (int i = 1; i < s.Length; i++) if (s[i] > s[best]) best = i;
                dst = (uint)best + 1;   // keys are 1-based
            };
            return (ValueGetter<TValue>)(Delegate)g;
        }
        if (parent.Task == QuanTATask.TextGeneration && k == 0)
        {
            if (typeof(TValue) != typeof(ReadOnlyMemory<char>)) throw TypeMismatch<TValue>(column, "ReadOnlyMemory<char>");
            ValueGetter<ReadOnlyMemory<char>> g = (ref ReadOnlyMemory<char> dst) => dst = text().AsMemory();
            return (ValueGetter<TValue>)(Delegate)g;
        }
        throw new ArgumentOutOfRangeException(nameof(column), $"Column '{column.Name}' is not an output of the QuanTA transformer.");
    }

    static InvalidOperationException TypeMismatch<TValue>(DataViewSchema.Column c, string expected) =>
        new($"Column '{c.Name}' holds {expected}, not {typeof(TValue).Name}.");
}
