namespace QuanTA.Core.Chat.Templates;

internal sealed partial class JinjaEvaluator
{
    object? Eval(Expr expr, Scope scope)
    {
        try
        {
            return EvalCore(expr, scope);
        }
        catch (JinjaRuntimeError e)
        {
            throw Located(e, expr);
        }
    }

    object? EvalCore(Expr expr, Scope scope)
    {
        switch (expr)
        {
            case ConstExpr c:
                return c.Value;
            case NameExpr n:
                return scope.TryGet(n.Name, out var value) ? value : JinjaUndefined.ForName(n.Name);
            case ListExpr l:
                return l.Items.Select(i => Eval(i, scope)).ToList();
            case TupleExpr t:
                return new JinjaTuple(t.Items.Select(i => Eval(i, scope)).ToList());
            case DictExpr d:
                var dict = new JinjaDict();
                foreach (var (k, v) in d.Items) dict.Set(Eval(k, scope), Eval(v, scope));
                return dict;
            case GetAttrExpr ga:
                return JinjaAccess.GetAttr(Eval(ga.Object, scope), ga.Name);
            case GetItemExpr gi:
                var target = Eval(gi.Object, scope);
                if (gi.Key is SliceExpr s)
                    return JinjaAccess.Slice(target, s.Start is null ? null : Eval(s.Start, scope), s.Stop is null ? null : Eval(s.Stop, scope),
                        s.Step is null ? null : Eval(s.Step, scope));
                return JinjaAccess.GetItem(target, Eval(gi.Key, scope));
            case CallExpr call:
                return Call(Eval(call.Callee, scope), EvalArgs(call.Args, call.Kwargs, scope));
            case FilterExpr f:
                return ApplyFilter(f, f.Input is null ? null : Eval(f.Input, scope), scope);
            case TestExpr test:
                var args = test.Args.Select(a => Eval(a, scope)).ToList();
                bool result = JinjaTests.Apply(test.Name, Eval(test.Input, scope), args);
                return test.Negated ? !result : result;
            case UnaryExpr u:
                var operand = Eval(u.Operand, scope);
                return u.Op == "-" ? PyOps.Negate(operand) : PyOps.Plus(operand);
            case NotExpr not:
                return !PyOps.Truthy(Eval(not.Operand, scope));
            case BinaryExpr b:
                return Binary(b.Op, Eval(b.Left, scope), Eval(b.Right, scope));
            case ConcatExpr cat:
                return string.Concat(cat.Items.Select(i => PyFormat.Str(Eval(i, scope))));
            case LogicalExpr lg:
                var left = Eval(lg.Left, scope);
                return PyOps.Truthy(left) == lg.IsAnd ? Eval(lg.Right, scope) : left;
            case CompareExpr cmp:
                return Compare(cmp, scope);
            case CondExpr cond:
                if (PyOps.Truthy(Eval(cond.Test, scope))) return Eval(cond.Then, scope);
                return cond.Else is null
                    ? JinjaUndefined.WithHint($"the inline if-expression on line {cond.Line} evaluated to false and no else section was defined.")
                    : Eval(cond.Else, scope);
            case SliceExpr:
                throw new JinjaRuntimeError("a slice is only valid inside []");
            default:
                throw new JinjaRuntimeError($"unsupported expression {expr.GetType().Name}");
        }
    }

    CallArgs EvalArgs(IReadOnlyList<Expr> args, IReadOnlyList<(string Name, Expr Value)> kwargs, Scope scope) =>
        args.Count == 0 && kwargs.Count == 0
            ? CallArgs.Empty
            : new CallArgs(args.Select(a => Eval(a, scope)).ToList(),
                kwargs.Select(k => new KeyValuePair<string, object?>(k.Name, Eval(k.Value, scope))).ToList());

    static object? Call(object? callee, CallArgs args) => callee switch
    {
        JinjaCallable f => f.Invoke(args),
        JinjaUndefined u => throw u.Fail(),
        _ => throw new JinjaRuntimeError($"'{PyOps.TypeName(callee)}' object is not callable"),
    };

    object? ApplyFilter(FilterExpr f, object? input, Scope scope) =>
        JinjaFilters.Apply(f.Name, input, EvalArgs(f.Args, f.Kwargs, scope), this);

    static object? Binary(string op, object? a, object? b) => op switch
    {
        "+" => PyOps.Add(a, b),
        "-" => PyOps.Sub(a, b),
        "*" => PyOps.Mul(a, b),
        "/" => PyOps.TrueDiv(a, b),
        "//" => PyOps.FloorDiv(a, b),
        "%" => PyOps.Mod(a, b),
        "**" => PyOps.Pow(a, b),
        _ => throw new JinjaRuntimeError($"unknown operator '{op}'"),
    };

    /// <summary>Python's chained comparison: <c>a &lt; b &lt; c</c> is <c>a &lt; b and b &lt; c</c>, each operand evaluated once.</summary>
    object? Compare(CompareExpr cmp, Scope scope)
    {
        var left = Eval(cmp.First, scope);
        foreach (var (op, operandExpr) in cmp.Rest)
        {
            var right = Eval(operandExpr, scope);
            if (!PyOps.CompareOp(op, left, right)) return false;
            left = right;
        }
        return true;
    }

    /// <summary>Calls filter <paramref name="name"/> from another filter (<c>map('trim')</c>).</summary>
    internal object? CallFilter(string name, object? value, CallArgs args)
    {
        if (!JinjaFilters.Exists(name)) throw new JinjaRuntimeError($"No filter named '{name}'.");
        return JinjaFilters.Apply(name, value, args, this);
    }

    /// <summary>Calls test <paramref name="name"/> from a filter (<c>select('equalto', 3)</c>).</summary>
    internal bool CallTest(string name, object? value, IReadOnlyList<object?> args)
    {
        if (!JinjaTests.Exists(name)) throw new JinjaRuntimeError($"No test named '{name}'.");
        return JinjaTests.Apply(name, value, args);
    }
}
