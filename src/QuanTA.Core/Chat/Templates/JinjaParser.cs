namespace QuanTA.Core.Chat.Templates;

/// <summary>
/// Jinja2's grammar (its <c>parser.py</c>) for the statements chat templates use: <c>for</c> (with <c>else</c>, tuple
/// targets, <c>if</c> filter), <c>if/elif/else</c>, <c>set</c> (plain, tuple, <c>ns.attr</c>, block), <c>macro</c>,
/// <c>filter</c>, <c>with</c>, <c>print</c>, <c>break</c>/<c>continue</c> and transformers' <c>generation</c> tag.
/// Expressions are in <c>JinjaParser.Expressions.cs</c>.
/// </summary>
internal sealed partial class JinjaParser
{
    // Jinja's built-in tags this evaluator leaves out (they need other templates or caller blocks). Extension tags
    // transformers does not enable (do, trans) are unknown tags here as they are there.
    static readonly HashSet<string> UnsupportedTags = ["include", "extends", "block", "import", "from", "call", "autoescape"];

    readonly List<Token> _tokens;
    int _index;
    int _loopDepth;
    // Tags that close the blocks being parsed (innermost last), for "unknown tag" / "unexpected end" messages.
    readonly List<(string Block, string[] EndTags)> _open = new();

    JinjaParser(List<Token> tokens) => _tokens = tokens;

    /// <summary>Parses a whole template; throws <see cref="JinjaSyntaxError"/> with the position of the problem.</summary>
    public static IReadOnlyList<Stmt> Parse(string template)
    {
        var parser = new JinjaParser(JinjaLexer.Tokenize(template, out _));
        var body = parser.ParseBody([], out _);
        return body;
    }

    Token Current => _tokens[_index];
    Token Peek(int ahead = 1) => _tokens[Math.Min(_index + ahead, _tokens.Count - 1)];
    Token Advance() => _tokens[_index++];

    Token Expect(TokenKind kind, string? text = null)
    {
        var t = Current;
        if (t.Kind != kind || (text is not null && t.Text != text))
            throw Fail($"expected {(text is null ? Describe(kind) : $"'{text}'")}, got {t.Describe()}", t);
        return Advance();
    }

    bool SkipIf(TokenKind kind, string text)
    {
        if (!Current.Is(kind, text)) return false;
        _index++;
        return true;
    }

    static string Describe(TokenKind kind) => kind switch
    {
        TokenKind.BlockEnd => "end of statement block ('%}')",
        TokenKind.VariableEnd => "end of print statement ('}}')",
        TokenKind.Name => "a name",
        _ => kind.ToString(),
    };

    static JinjaSyntaxError Fail(string message, Token at) => new(message, at.Line, at.Column);

    /// <summary>
    /// Statements up to a block tag named in <paramref name="endTags"/>; that tag's name is consumed and returned in
    /// <paramref name="endTag"/> (its arguments and '%}' are left to the caller).
    /// </summary>
    List<Stmt> ParseBody(string[] endTags, out string? endTag)
    {
        var body = new List<Stmt>();
        while (true)
        {
            var t = Current;
            switch (t.Kind)
            {
                case TokenKind.Data:
                    body.Add(new TextStmt((string)t.Value!, t.Line, t.Column));
                    Advance();
                    break;
                case TokenKind.VariableBegin:
                    Advance();
                    var value = ParseTuple(withCondExpr: true);
                    Expect(TokenKind.VariableEnd);
                    body.Add(new OutputStmt(value, t.Line, t.Column));
                    break;
                case TokenKind.BlockBegin:
                    Advance();
                    var name = Current;
                    if (name.Kind != TokenKind.Name) throw Fail($"expected a tag name after '{{%', got {name.Describe()}", name);
                    if (endTags.Contains(name.Text))
                    {
                        Advance();
                        endTag = name.Text;
                        return body;
                    }
                    body.Add(ParseStatement(name));
                    break;
                case TokenKind.End:
                    if (endTags.Length > 0) throw Fail("Unexpected end of template. " + LookingFor(), t);
                    endTag = null;
                    return body;
                default:
                    throw Fail($"unexpected {t.Describe()}", t);
            }
        }
    }

    string LookingFor()
    {
        if (_open.Count == 0) return "";
        var (block, endTags) = _open[^1];
        return $"Jinja was looking for the following tags: {string.Join(" or ", endTags.Select(e => $"'{e}'"))}. " +
               $"The innermost block that needs to be closed is '{block}'.";
    }

    List<Stmt> ParseBlockBody(string block, string[] endTags, out string endTag)
    {
        _open.Add((block, endTags));
        var body = ParseBody(endTags, out var end);
        _open.RemoveAt(_open.Count - 1);
        endTag = end!;
        return body;
    }

    /// <summary>A body ending with one tag that takes no arguments (e.g. <c>{% endfor %}</c>).</summary>
    List<Stmt> ParseBodyUntil(string block, string endTag)
    {
        var body = ParseBlockBody(block, [endTag], out _);
        Expect(TokenKind.BlockEnd);
        return body;
    }

    void ExpectBlockEnd()
    {
        SkipIf(TokenKind.Operator, ":");
        Expect(TokenKind.BlockEnd);
    }

    Stmt ParseStatement(Token tag)
    {
        switch (tag.Text)
        {
            case "for": return ParseFor();
            case "if": return ParseIf();
            case "set": return ParseSet();
            case "macro": return ParseMacro();
            case "filter": return ParseFilterBlock();
            case "with": return ParseWith();
            case "print":
                Advance();
                var value = ParseTuple(withCondExpr: true);
                Expect(TokenKind.BlockEnd);
                return new OutputStmt(value, tag.Line, tag.Column);
            case "generation":
                Advance();
                ExpectBlockEnd();
                return new BlockStmt(ParseBodyUntil("generation", "endgeneration"), tag.Line, tag.Column);
            case "break" or "continue":
                Advance();
                if (_loopDepth == 0) throw Fail($"'{tag.Text}' outside of a for loop", tag);
                Expect(TokenKind.BlockEnd);
                return tag.Text == "break" ? new BreakStmt(tag.Line, tag.Column) : new ContinueStmt(tag.Line, tag.Column);
        }
        if (UnsupportedTags.Contains(tag.Text))
            throw Fail($"the '{tag.Text}' tag is not supported by this chat-template evaluator (a Jinja subset for chat templates)", tag);
        string message = $"Encountered unknown tag '{tag.Text}'.";
        if (_open.Count > 0) message += " " + LookingFor();
        throw Fail(message, tag);
    }

    Stmt ParseFor()
    {
        var tag = Advance();
        var target = ParseAssignTarget(endName: "in");
        Expect(TokenKind.Name, "in");
        var iterable = ParseTuple(withCondExpr: false, endName: "recursive");
        Expr? filter = SkipIf(TokenKind.Name, "if") ? ParseExpression(withCondExpr: true) : null;
        if (Current.IsName("recursive")) throw Fail("recursive for loops are not supported by this chat-template evaluator", Current);
        ExpectBlockEnd();
        _loopDepth++;
        var body = ParseBlockBody("for", ["endfor", "else"], out var end);
        _loopDepth--;
        Expect(TokenKind.BlockEnd);
        IReadOnlyList<Stmt>? otherwise = end == "else" ? ParseBodyUntil("for", "endfor") : null;
        return new ForStmt(target, iterable, filter, body, otherwise, tag.Line, tag.Column);
    }

    Stmt ParseIf()
    {
        var tag = Advance();
        var branches = new List<(Expr, IReadOnlyList<Stmt>)>();
        IReadOnlyList<Stmt>? otherwise = null;
        while (true)
        {
            var test = ParseTuple(withCondExpr: false);
            ExpectBlockEnd();
            var body = ParseBlockBody("if", ["elif", "else", "endif"], out var end);
            branches.Add((test, body));
            if (end == "elif") continue;
            Expect(TokenKind.BlockEnd);
            if (end == "else") otherwise = ParseBodyUntil("if", "endif");
            break;
        }
        return new IfStmt(branches, otherwise, tag.Line, tag.Column);
    }

    Stmt ParseSet()
    {
        var tag = Advance();
        var target = ParseAssignTarget(withNamespace: true);
        if (SkipIf(TokenKind.Operator, "="))
        {
            var value = ParseTuple(withCondExpr: true);
            Expect(TokenKind.BlockEnd);
            return new SetStmt(target, value, tag.Line, tag.Column);
        }
        var filters = new List<FilterExpr>();
        while (SkipIf(TokenKind.Operator, "|")) filters.Add(ParseFilterCall(null));
        ExpectBlockEnd();
        return new SetBlockStmt(target, ParseBodyUntil("set", "endset"), filters, tag.Line, tag.Column);
    }

    Stmt ParseMacro()
    {
        var tag = Advance();
        string name = Expect(TokenKind.Name).Text;
        Expect(TokenKind.Operator, "(");
        var parameters = new List<string>();
        var defaults = new List<Expr?>();
        while (!Current.IsOp(")"))
        {
            if (parameters.Count > 0) Expect(TokenKind.Operator, ",");
            if (Current.IsOp(")")) break;
            var p = Expect(TokenKind.Name);
            parameters.Add(p.Text);
            if (SkipIf(TokenKind.Operator, "=")) defaults.Add(ParseExpression(withCondExpr: true));
            else if (defaults.Any(d => d is not null)) throw Fail("non-default argument follows default argument", p);
            else defaults.Add(null);
        }
        Expect(TokenKind.Operator, ")");
        ExpectBlockEnd();
        int loopDepth = _loopDepth;
        _loopDepth = 0; // break/continue inside a macro body cannot reach a loop outside it
        var body = ParseBodyUntil("macro", "endmacro");
        _loopDepth = loopDepth;
        return new MacroStmt(name, parameters, defaults, body, tag.Line, tag.Column);
    }

    Stmt ParseFilterBlock()
    {
        var tag = Advance();
        var filters = new List<FilterExpr> { ParseFilterCall(null) };
        while (SkipIf(TokenKind.Operator, "|")) filters.Add(ParseFilterCall(null));
        ExpectBlockEnd();
        return new FilterBlockStmt(filters, ParseBodyUntil("filter", "endfilter"), tag.Line, tag.Column);
    }

    Stmt ParseWith()
    {
        var tag = Advance();
        var assignments = new List<(Target, Expr)>();
        while (Current.Kind != TokenKind.BlockEnd)
        {
            if (assignments.Count > 0) Expect(TokenKind.Operator, ",");
            var target = ParseAssignTarget();
            Expect(TokenKind.Operator, "=");
            assignments.Add((target, ParseExpression(withCondExpr: true)));
        }
        Expect(TokenKind.BlockEnd);
        return new WithStmt(assignments, ParseBodyUntil("with", "endwith"), tag.Line, tag.Column);
    }

    /// <summary>
    /// The left side of <c>for ... in</c> / <c>set ... =</c>: a name, a tuple of names (parentheses allowed), or with
    /// <paramref name="withNamespace"/> a <c>ns.attr</c> reference.
    /// </summary>
    Target ParseAssignTarget(string? endName = null, bool withNamespace = false)
    {
        var first = Current;
        if (withNamespace && first.Kind == TokenKind.Name && Peek().IsOp("."))
        {
            Advance();
            Advance();
            var attr = Expect(TokenKind.Name);
            return new NamespaceTarget(first.Text, attr.Text, first.Line, first.Column);
        }
        var items = new List<Target>();
        bool isTuple = false;
        while (true)
        {
            if (items.Count > 0) Expect(TokenKind.Operator, ",");
            if (Current.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd || Current.IsOp(")") || Current.IsOp("=")
                || (endName is not null && Current.IsName(endName)))
                break;
            items.Add(ParseTargetItem());
            if (Current.IsOp(",")) isTuple = true;
            else break;
        }
        if (items.Count == 0) throw Fail($"expected an assignment target, got {Current.Describe()}", Current);
        return isTuple ? new TupleTarget(items, first.Line, first.Column) : items[0];
    }

    Target ParseTargetItem()
    {
        var t = Current;
        if (t.Kind == TokenKind.Name)
        {
            if (t.Text is "true" or "false" or "True" or "False" or "none" or "None")
                throw Fail($"can't assign to the constant '{t.Text}'", t);
            Advance();
            return new NameTarget(t.Text, t.Line, t.Column);
        }
        if (t.IsOp("("))
        {
            Advance();
            var inner = ParseAssignTarget();
            Expect(TokenKind.Operator, ")");
            return inner;
        }
        throw Fail($"can't assign to {t.Describe()}", t);
    }
}
