namespace QuanTA.Core.Chat.Templates;

// Expression grammar, by increasing precedence, as in Jinja2's parser.py:
//   tuple      := expr ("," expr)*
//   condexpr   := or ("if" or ("else" condexpr)?)*
//   or / and / not, compare (== != < <= > >= in, not in), math1 (+ -), concat (~), math2 (* / // %), pow (**),
//   unary (- +) then primary with postfix (.attr [item] (call)) and filters/tests (| name, is [not] name).
internal sealed partial class JinjaParser
{
    static readonly HashSet<string> CompareOps = ["==", "!=", "<", "<=", ">", ">="];

    /// <summary>A comma-separated list becomes a tuple; one item without a comma is just that item.</summary>
    Expr ParseTuple(bool withCondExpr, string? endName = null, bool explicitParentheses = false)
    {
        var start = Current;
        var items = new List<Expr>();
        bool isTuple = false;
        while (true)
        {
            if (items.Count > 0) Expect(TokenKind.Operator, ",");
            if (Current.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd || Current.IsOp(")")
                || (endName is not null && Current.IsName(endName)))
                break;
            items.Add(ParseExpression(withCondExpr));
            if (Current.IsOp(",")) isTuple = true;
            else break;
        }
        if (!isTuple)
        {
            if (items.Count > 0) return items[0];
            if (!explicitParentheses) throw Fail($"Expected an expression, got {Current.Describe()}", Current);
        }
        return new TupleExpr(items, start.Line, start.Column);
    }

    Expr ParseExpression(bool withCondExpr) => withCondExpr ? ParseCondExpr() : ParseOr();

    Expr ParseCondExpr()
    {
        var start = Current;
        var expr = ParseOr();
        while (SkipIf(TokenKind.Name, "if"))
        {
            var test = ParseOr();
            Expr? otherwise = SkipIf(TokenKind.Name, "else") ? ParseCondExpr() : null;
            expr = new CondExpr(test, expr, otherwise, start.Line, start.Column);
        }
        return expr;
    }

    Expr ParseOr()
    {
        var left = ParseAnd();
        while (Current.IsName("or"))
        {
            var op = Advance();
            left = new LogicalExpr(false, left, ParseAnd(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseAnd()
    {
        var left = ParseNot();
        while (Current.IsName("and"))
        {
            var op = Advance();
            left = new LogicalExpr(true, left, ParseNot(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseNot()
    {
        if (!Current.IsName("not")) return ParseCompare();
        var op = Advance();
        return new NotExpr(ParseNot(), op.Line, op.Column);
    }

    Expr ParseCompare()
    {
        var start = Current;
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && CompareOps.Contains(Current.Text))
                rest.Add((Advance().Text, ParseMath1()));
            else if (SkipIf(TokenKind.Name, "in"))
                rest.Add(("in", ParseMath1()));
            else if (Current.IsName("not") && Peek().IsName("in"))
            {
                _index += 2;
                rest.Add(("notin", ParseMath1()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, start.Line, start.Column);
    }

    Expr ParseMath1()
    {
        var left = ParseConcat();
        while (Current.IsOp("+") || Current.IsOp("-"))
        {
            var op = Advance();
            left = new BinaryExpr(op.Text, left, ParseConcat(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseConcat()
    {
        var start = Current;
        var items = new List<Expr> { ParseMath2() };
        while (SkipIf(TokenKind.Operator, "~")) items.Add(ParseMath2());
        return items.Count == 1 ? items[0] : new ConcatExpr(items, start.Line, start.Column);
    }

    Expr ParseMath2()
    {
        var left = ParsePow();
        while (Current.Kind == TokenKind.Operator && Current.Text is "*" or "/" or "//" or "%")
        {
            var op = Advance();
            left = new BinaryExpr(op.Text, left, ParsePow(), op.Line, op.Column);
        }
        return left;
    }

    Expr ParsePow()
    {
        var left = ParseUnary(withFilter: true);
        while (Current.IsOp("**"))
        {
            var op = Advance();
            left = new BinaryExpr("**", left, ParseUnary(withFilter: true), op.Line, op.Column);
        }
        return left;
    }

    Expr ParseUnary(bool withFilter)
    {
        var t = Current;
        Expr node;
        if (t.IsOp("-") || t.IsOp("+"))
        {
            Advance();
            node = new UnaryExpr(t.Text, ParseUnary(withFilter: false), t.Line, t.Column);
        }
        else node = ParsePrimary();
        node = ParsePostfix(node);
        return withFilter ? ParseFilterTestChain(node) : node;
    }

    Expr ParsePrimary()
    {
        var t = Current;
        switch (t.Kind)
        {
            case TokenKind.Name:
                Advance();
                return t.Text switch
                {
                    "true" or "True" => new ConstExpr(true, t.Line, t.Column),
                    "false" or "False" => new ConstExpr(false, t.Line, t.Column),
                    "none" or "None" => new ConstExpr(null, t.Line, t.Column),
                    _ => new NameExpr(t.Text, t.Line, t.Column),
                };
            case TokenKind.String:
                Advance();
                string text = (string)t.Value!;
                while (Current.Kind == TokenKind.String) text += (string)Advance().Value!; // 'a' 'b' == 'ab'
                return new ConstExpr(text, t.Line, t.Column);
            case TokenKind.Integer or TokenKind.Float:
                Advance();
                return new ConstExpr(t.Value, t.Line, t.Column);
            case TokenKind.Operator when t.Text == "(":
                Advance();
                var inner = ParseTuple(withCondExpr: true, explicitParentheses: true);
                Expect(TokenKind.Operator, ")");
                return inner;
            case TokenKind.Operator when t.Text == "[":
                Advance();
                var items = new List<Expr>();
                while (!Current.IsOp("]"))
                {
                    if (items.Count > 0) Expect(TokenKind.Operator, ",");
                    if (Current.IsOp("]")) break;
                    items.Add(ParseExpression(withCondExpr: true));
                }
                Expect(TokenKind.Operator, "]");
                return new ListExpr(items, t.Line, t.Column);
            case TokenKind.Operator when t.Text == "{":
                Advance();
                var pairs = new List<(Expr, Expr)>();
                while (!Current.IsOp("}"))
                {
                    if (pairs.Count > 0) Expect(TokenKind.Operator, ",");
                    if (Current.IsOp("}")) break;
                    var key = ParseExpression(withCondExpr: true);
                    Expect(TokenKind.Operator, ":");
                    pairs.Add((key, ParseExpression(withCondExpr: true)));
                }
                Expect(TokenKind.Operator, "}");
                return new DictExpr(pairs, t.Line, t.Column);
            default:
                throw Fail($"unexpected {t.Describe()}", t);
        }
    }

    Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            var t = Current;
            if (t.IsOp("."))
            {
                Advance();
                var attr = Advance();
                if (attr.Kind == TokenKind.Name) node = new GetAttrExpr(node, attr.Text, t.Line, t.Column);
                else if (attr.Kind == TokenKind.Integer) node = new GetItemExpr(node, new ConstExpr(attr.Value, attr.Line, attr.Column), t.Line, t.Column);
                else throw Fail($"expected a name or number after '.', got {attr.Describe()}", attr);
            }
            else if (t.IsOp("["))
            {
                Advance();
                var keys = new List<Expr>();
                while (!Current.IsOp("]"))
                {
                    if (keys.Count > 0) Expect(TokenKind.Operator, ",");
                    keys.Add(ParseSubscript());
                }
                Expect(TokenKind.Operator, "]");
                if (keys.Count == 0) throw Fail("expected a subscript inside '[]'", t);
                var key = keys.Count == 1 ? keys[0] : new TupleExpr(keys, t.Line, t.Column);
                node = new GetItemExpr(node, key, t.Line, t.Column);
            }
            else if (t.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    /// <summary>One subscript: an expression or a slice <c>start:stop:step</c> (each part optional).</summary>
    Expr ParseSubscript()
    {
        var start = Current;
        Expr? lower = null;
        if (!Current.IsOp(":"))
        {
            lower = ParseExpression(withCondExpr: true);
            if (!Current.IsOp(":")) return lower;
        }
        Advance(); // ':'
        Expr? upper = null, step = null;
        if (!Current.IsOp(":") && !Current.IsOp("]") && !Current.IsOp(",")) upper = ParseExpression(withCondExpr: true);
        if (SkipIf(TokenKind.Operator, ":") && !Current.IsOp("]") && !Current.IsOp(",")) step = ParseExpression(withCondExpr: true);
        return new SliceExpr(lower, upper, step, start.Line, start.Column);
    }

    /// <summary>A call, placed (for error messages) where its callee is: <c>raise_exception(...)</c>, <c>.append(...)</c>.</summary>
    Expr ParseCall(Expr callee)
    {
        var (args, kwargs) = ParseCallArgs();
        return new CallExpr(callee, args, kwargs, callee.Line, callee.Column);
    }

    (List<Expr> Args, List<(string, Expr)> Kwargs) ParseCallArgs()
    {
        Expect(TokenKind.Operator, "(");
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        bool requireComma = false;
        while (!Current.IsOp(")"))
        {
            if (requireComma)
            {
                Expect(TokenKind.Operator, ",");
                if (Current.IsOp(")")) break;
            }
            if (Current.IsOp("*") || Current.IsOp("**"))
                throw Fail("*args / **kwargs in calls are not supported by this chat-template evaluator", Current);
            if (Current.Kind == TokenKind.Name && Peek().IsOp("="))
            {
                string key = Advance().Text;
                Advance();
                kwargs.Add((key, ParseExpression(withCondExpr: true)));
            }
            else
            {
                if (kwargs.Count > 0) throw Fail("invalid syntax for function call expression (positional argument after keyword argument)", Current);
                args.Add(ParseExpression(withCondExpr: true));
            }
            requireComma = true;
        }
        Expect(TokenKind.Operator, ")");
        return (args, kwargs);
    }

    /// <summary>Filters (<c>| name</c>), tests (<c>is [not] name</c>) and calls after them, left to right.</summary>
    Expr ParseFilterTestChain(Expr node)
    {
        while (true)
        {
            if (SkipIf(TokenKind.Operator, "|")) node = ParseFilterCall(node);
            else if (Current.IsName("is")) node = ParseTest(node);
            else if (Current.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    FilterExpr ParseFilterCall(Expr? input)
    {
        var nameToken = Expect(TokenKind.Name);
        string name = nameToken.Text;
        while (SkipIf(TokenKind.Operator, ".")) name += "." + Expect(TokenKind.Name).Text;
        if (!JinjaFilters.Exists(name))
            throw Fail(JinjaFilters.IsJinjaBuiltin(name)
                ? $"the filter '{name}' is not supported by this chat-template evaluator (a Jinja subset for chat templates)"
                : $"No filter named '{name}'.", nameToken);
        var (args, kwargs) = Current.IsOp("(") ? ParseCallArgs() : ([], []);
        return new FilterExpr(input, name, args, kwargs, nameToken.Line, nameToken.Column);
    }

    Expr ParseTest(Expr input)
    {
        var isToken = Advance();
        bool negated = SkipIf(TokenKind.Name, "not");
        var nameToken = Current;
        string name;
        if (nameToken.Kind == TokenKind.Name) name = Advance().Text;
        else throw Fail($"expected a test name after 'is', got {nameToken.Describe()}", nameToken);
        while (SkipIf(TokenKind.Operator, ".")) name += "." + Expect(TokenKind.Name).Text;
        if (!JinjaTests.Exists(name)) throw Fail($"No test named '{name}'.", nameToken);
        var args = new List<Expr>();
        var next = Current;
        if (next.IsOp("("))
        {
            var (a, kw) = ParseCallArgs();
            if (kw.Count > 0) throw Fail("keyword arguments to tests are not supported", next);
            args = a;
        }
        else if ((next.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float || next.IsOp("[") || next.IsOp("{"))
                 && !next.IsName("else") && !next.IsName("or") && !next.IsName("and"))
        {
            if (next.IsName("is")) throw Fail("You cannot chain multiple tests with is", next);
            args.Add(ParsePostfix(ParsePrimary())); // "x is divisibleby 3", "x is sameas y"
        }
        return new TestExpr(input, name, args, negated, isToken.Line, isToken.Column);
    }
}
