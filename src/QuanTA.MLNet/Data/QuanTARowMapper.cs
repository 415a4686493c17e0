using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Data;

/// <summary>
/// Row-at-a-time view of the transformer for <c>CreatePredictionEngine</c> and <c>TransformerChain</c> row mapping:
/// output getters run the model on the current row once (cached on position and text, since a prediction engine reuses
/// its input row).
/// </summary>
internal sealed class QuanTARowMapper : IRowToRowMapper
{
    readonly QuanTAFineTuneTransformer _parent;

    public QuanTARowMapper(QuanTAFineTuneTransformer parent, DataViewSchema inputSchema)
    {
        _parent = parent;
        InputSchema = inputSchema;
        OutputSchema = parent.GetOutputSchema(inputSchema);
    }

    public DataViewSchema InputSchema { get; }
    public DataViewSchema OutputSchema { get; }

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        int nIn = InputSchema.Count;
        var cols = dependingColumns.ToList();
        var needed = cols.Where(c => c.Index < nIn).Select(c => InputSchema[c.Index]).ToList();
        if (cols.Any(c => c.Index >= nIn))
            needed.AddRange(_parent.InputColumnNames.Select(n => InputSchema[n]));
        return needed.DistinctBy(c => c.Index).ToList();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns) =>
        new Row(this, input, activeColumns.Select(c => c.Index).ToHashSet());

    sealed class Row : DataViewRow
    {
        readonly QuanTARowMapper _mapper;
        readonly DataViewRow _input;
        readonly HashSet<int> _active;
        readonly OutputGetters _outputs;
        readonly ValueGetter<ReadOnlyMemory<char>>? _text, _second;
        (long Position, string Text, string? Second)? _cachedFor;
        float[]? _scores; string? _generated;

        public Row(QuanTARowMapper mapper, DataViewRow input, HashSet<int> active)
        {
            _mapper = mapper; _input = input; _active = active;
            int nIn = mapper.InputSchema.Count;
            _outputs = new OutputGetters(mapper._parent, nIn, () => { Ensure(); return _scores!; }, () => { Ensure(); return _generated!; });
            if (active.Any(i => i >= nIn)) (_text, _second) = OutputGetters.TextInputs(input, mapper._parent);
        }

        public override DataViewSchema Schema => _mapper.OutputSchema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active.Contains(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' was not requested for this row.");
            return column.Index < _mapper.InputSchema.Count
                ? _input.GetGetter<TValue>(_mapper.InputSchema[column.Index])
                : _outputs.Get<TValue>(column);
        }

        void Ensure()
        {
            ReadOnlyMemory<char> t = default, t2 = default;
            _text!(ref t);
            string text = t.ToString();
            string? second = null;
            if (_second is not null) { _second(ref t2); second = t2.ToString(); }
            var key = (_input.Position, text, second);
            if (_cachedFor == key) return;
            var (scores, texts) = _mapper._parent.Predict([(text, second)]);
            _scores = scores?[0]; _generated = texts?[0];
            _cachedFor = key;
        }
    }
}
