using System.Text;

namespace QuanTA.Core.Chat.Templates;

/// <summary>
/// Runs a parsed template. Scoping follows Jinja2: <c>if</c> shares its scope, each <c>for</c> iteration (and each
/// macro call, <c>with</c> and block body) gets a fresh child scope, so a <c>{% set %}</c> inside a loop is gone after
/// the iteration (templates use <c>namespace()</c> to carry state out of loops). Errors become
/// <see cref="ChatTemplateException"/>s that carry the line and column of the innermost node being evaluated.
/// </summary>
internal sealed partial class JinjaEvaluator
{
    const int MaxMacroDepth = 200;
    const int MaxRange = 100_000; // Jinja's sandbox refuses larger ranges

    readonly string _templateName;
    readonly TimeProvider _clock;
    int _macroDepth;

    public JinjaEvaluator(string templateName, TimeProvider clock)
    {
        _templateName = templateName;
        _clock = clock;
    }

    enum Flow { Normal, Break, Continue }

    /// <summary>Variables visible to a template part: a dictionary with a parent (the enclosing scope).</summary>
    internal sealed class Scope(Scope? parent)
    {
        readonly Dictionary<string, object?> _vars = new(StringComparer.Ordinal);

        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s is not null; s = s.Parent)
                if (s._vars.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }

        public void Set(string name, object? value) => _vars[name] = value;
        public Scope? Parent { get; } = parent;
    }

    public string Render(IReadOnlyList<Stmt> body, IReadOnlyDictionary<string, object?> variables)
    {
        var context = new Scope(CreateGlobals());
        foreach (var (name, value) in variables) context.Set(name, value);
        var output = new StringBuilder();
        Exec(body, context, output);
        return output.ToString();
    }

    Flow Exec(IReadOnlyList<Stmt> body, Scope scope, StringBuilder output)
    {
        foreach (var stmt in body)
        {
            var flow = Exec(stmt, scope, output);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    Flow Exec(Stmt stmt, Scope scope, StringBuilder output)
    {
        try
        {
            switch (stmt)
            {
                case TextStmt t:
                    output.Append(t.Text);
                    return Flow.Normal;
                case OutputStmt o:
                    output.Append(PyFormat.Str(Eval(o.Value, scope)));
                    return Flow.Normal;
                case IfStmt i:
                    foreach (var (test, branch) in i.Branches)
                        if (PyOps.Truthy(Eval(test, scope))) return Exec(branch, scope, output);
                    return i.Else is null ? Flow.Normal : Exec(i.Else, scope, output);
                case ForStmt f:
                    ExecFor(f, scope, output);
                    return Flow.Normal;
                case SetStmt s:
                    Assign(s.Target, Eval(s.Value, scope), scope, allowNamespace: true);
                    return Flow.Normal;
                case SetBlockStmt sb:
                    object? captured = RenderBody(sb.Body, new Scope(scope));
                    foreach (var filter in sb.Filters) captured = ApplyFilter(filter, captured, scope);
                    Assign(sb.Target, captured, scope, allowNamespace: true);
                    return Flow.Normal;
                case MacroStmt m:
                    scope.Set(m.Name, new JinjaMacro(this, m, scope));
                    return Flow.Normal;
                case FilterBlockStmt fb:
                    object? text = RenderBody(fb.Body, new Scope(scope));
                    foreach (var filter in fb.Filters) text = ApplyFilter(filter, text, scope);
                    output.Append(PyFormat.Str(text));
                    return Flow.Normal;
                case WithStmt w:
                    var inner = new Scope(scope);
                    foreach (var (target, value) in w.Assignments) Assign(target, Eval(value, scope), inner, allowNamespace: false);
                    return Exec(w.Body, inner, output);
                case BlockStmt b:
                    return Exec(b.Body, scope, output);
                case BreakStmt:
                    return Flow.Break;
                case ContinueStmt:
                    return Flow.Continue;
                default:
                    throw new JinjaRuntimeError($"unsupported statement {stmt.GetType().Name}");
            }
        }
        catch (JinjaRuntimeError e)
        {
            throw Located(e, stmt);
        }
    }

    string RenderBody(IReadOnlyList<Stmt> body, Scope scope)
    {
        var output = new StringBuilder();
        Exec(body, scope, output);
        return output.ToString();
    }

    void ExecFor(ForStmt f, Scope scope, StringBuilder output)
    {
        var items = PyOps.Iterate(Eval(f.Iterable, scope)).ToList();
        if (f.Filter is not null)
            items = items.Where(item =>
            {
                var probe = new Scope(scope);
                Assign(f.Target, item, probe, allowNamespace: false);
                return PyOps.Truthy(Eval(f.Filter, probe));
            }).ToList();
        if (items.Count == 0)
        {
            if (f.Else is not null) Exec(f.Else, new Scope(scope), output);
            return;
        }
        var loop = new JinjaLoop(items);
        for (int i = 0; i < items.Count; i++)
        {
            loop.Index0 = i;
            var iteration = new Scope(scope);
            iteration.Set("loop", loop);
            Assign(f.Target, items[i], iteration, allowNamespace: false);
            if (Exec(f.Body, iteration, output) == Flow.Break) break;
        }
    }

    void Assign(Target target, object? value, Scope scope, bool allowNamespace)
    {
        switch (target)
        {
            case NameTarget n:
                scope.Set(n.Name, value);
                break;
            case TupleTarget t:
                var values = PyOps.Iterate(value).ToList();
                if (values.Count < t.Items.Count)
                    throw new JinjaRuntimeError($"not enough values to unpack (expected {t.Items.Count}, got {values.Count})");
                if (values.Count > t.Items.Count)
                    throw new JinjaRuntimeError($"too many values to unpack (expected {t.Items.Count})");
                for (int i = 0; i < values.Count; i++) Assign(t.Items[i], values[i], scope, allowNamespace: false);
                break;
            case NamespaceTarget ns when allowNamespace:
                if (!scope.TryGet(ns.Name, out var obj) || obj is not JinjaNamespace space)
                    throw new JinjaRuntimeError("cannot assign attribute on non-namespace object");
                space.Attributes[ns.Attribute] = value;
                break;
            default:
                throw new JinjaRuntimeError("can't assign to this target here");
        }
    }

    /// <summary>Turns an evaluation error into the public exception, with the template position of <paramref name="node"/>.</summary>
    Exception Located(JinjaRuntimeError e, Node node) => e is JinjaRaiseError
        ? new ChatTemplateRefusedException(_templateName, e.Message, node.Line, node.Column)
        : new ChatTemplateException(_templateName, e.Message, node.Line, node.Column, e);

    /// <summary>Calls a <c>{% macro %}</c>: binds the arguments (missing ones are undefined) and renders the body.</summary>
    internal object? InvokeMacro(MacroStmt macro, Scope definition, CallArgs args)
    {
        if (args.Positional.Count > macro.Parameters.Count)
            throw new JinjaRuntimeError($"macro '{macro.Name}' takes not more than {macro.Parameters.Count} argument(s)");
        if (_macroDepth >= MaxMacroDepth) throw new JinjaRuntimeError($"macro '{macro.Name}' recursed more than {MaxMacroDepth} levels deep");
        var scope = new Scope(definition);
        var given = new Dictionary<string, object?>(StringComparer.Ordinal);
        for (int i = 0; i < args.Positional.Count; i++) given[macro.Parameters[i]] = args.Positional[i];
        foreach (var (name, value) in args.Keywords)
        {
            if (!macro.Parameters.Contains(name)) throw new JinjaRuntimeError($"macro '{macro.Name}' takes no keyword argument '{name}'");
            if (!given.TryAdd(name, value)) throw new JinjaRuntimeError($"macro '{macro.Name}' got multiple values for argument '{name}'");
        }
        for (int i = 0; i < macro.Parameters.Count; i++)
        {
            string p = macro.Parameters[i];
            scope.Set(p, given.TryGetValue(p, out var v) ? v
                : macro.Defaults[i] is { } d ? Eval(d, scope)
                : JinjaUndefined.WithHint($"parameter '{p}' was not provided"));
        }
        _macroDepth++;
        try { return RenderBody(macro.Body, scope); }
        finally { _macroDepth--; }
    }

    Scope CreateGlobals()
    {
        var g = new Scope(null);
        g.Set("range", new JinjaFunction("range", Range));
        g.Set("dict", new JinjaFunction("dict", a =>
        {
            var d = a.Positional.Count == 1 && a.Positional[0] is JinjaDict src ? Copy(src) : new JinjaDict();
            foreach (var (k, v) in a.Keywords) d.Set(k, v);
            return d;
        }));
        g.Set("namespace", new JinjaFunction("namespace", a =>
        {
            var ns = new JinjaNamespace();
            if (a.Positional.Count == 1 && a.Positional[0] is JinjaDict src)
                foreach (var (k, v) in src.Items) ns.Attributes[PyFormat.Str(k)] = v;
            else if (a.Positional.Count > 0) throw new JinjaRuntimeError("namespace() takes at most one positional argument (a dict)");
            foreach (var (k, v) in a.Keywords) ns.Attributes[k] = v;
            return ns;
        }));
        g.Set("raise_exception", new JinjaFunction("raise_exception", a =>
            throw new JinjaRaiseError(PyFormat.Str(a.Bind("raise_exception()", ["message"], [null], required: 1)[0]))));
        g.Set("strftime_now", new JinjaFunction("strftime_now", a =>
        {
            var format = a.Bind("strftime_now()", ["format"], [null], required: 1)[0] as string
                ?? throw new JinjaRuntimeError("strftime_now() argument must be str");
            return Strftime.Format(_clock.GetLocalNow().DateTime, format);
        }));
        return g;
    }

    static JinjaDict Copy(JinjaDict src)
    {
        var d = new JinjaDict();
        foreach (var (k, v) in src.Items) d.Set(k, v);
        return d;
    }

    static object? Range(CallArgs a)
    {
        if (a.Keywords.Count > 0) throw new JinjaRuntimeError("range() takes no keyword arguments");
        if (a.Positional.Count is < 1 or > 3) throw new JinjaRuntimeError($"range expected 1 to 3 arguments, got {a.Positional.Count}");
        var n = a.Positional.Select(v => PyOps.IsInt(v) ? PyOps.AsLong(v)
            : throw new JinjaRuntimeError($"'{PyOps.TypeName(v)}' object cannot be interpreted as an integer")).ToArray();
        long start = n.Length == 1 ? 0 : n[0], stop = n.Length == 1 ? n[0] : n[1], step = n.Length == 3 ? n[2] : 1;
        if (step == 0) throw new JinjaRuntimeError("range() arg 3 must not be zero");
        long count = step > 0 ? (stop - start + step - 1) / step : (start - stop - step - 1) / -step;
        if (count > MaxRange) throw new JinjaRuntimeError($"Range too big. The sandbox blocks ranges larger than MAX_RANGE ({MaxRange}).");
        return new JinjaRange(start, stop, step);
    }
}

/// <summary>A macro value (what <c>{% macro name() %}</c> binds): calling it renders the body.</summary>
internal sealed class JinjaMacro(JinjaEvaluator evaluator, MacroStmt macro, JinjaEvaluator.Scope definition) : JinjaCallable
{
    public override string Name => macro.Name;
    public override object? Invoke(CallArgs args) => evaluator.InvokeMacro(macro, definition, args);
    public override string ToString() => $"<Macro '{macro.Name}'>";
}
