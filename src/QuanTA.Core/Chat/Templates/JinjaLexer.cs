using System.Globalization;
using System.Text.RegularExpressions;

namespace QuanTA.Core.Chat.Templates;

internal enum TokenKind { Data, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End }

/// <summary>One lexer token; <see cref="Value"/> is the decoded string / long / double for literals.</summary>
internal readonly record struct Token(TokenKind Kind, string Text, object? Value, int Line, int Column)
{
    public bool Is(TokenKind kind, string text) => Kind == kind && Text == text;
    public bool IsName(string name) => Kind == TokenKind.Name && Text == name;
    public bool IsOp(string op) => Kind == TokenKind.Operator && Text == op;

    /// <summary>The token as Jinja's error messages quote it: 'end of statement block', 'name', '+', 'string', ...</summary>
    public string Describe() => "'" + Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.BlockBegin => "begin of statement block",
        TokenKind.BlockEnd => "end of statement block",
        TokenKind.VariableBegin => "begin of print statement",
        TokenKind.VariableEnd => "end of print statement",
        TokenKind.Data => "template data / text",
        TokenKind.String => "string",
        TokenKind.Integer => "integer",
        TokenKind.Float => "float",
        _ => Text,
    } + "'";
}

/// <summary>
/// Splits a template into tokens exactly as Jinja2's lexer does for the environment transformers uses
/// (<c>trim_blocks=True</c>, <c>lstrip_blocks=True</c>, default delimiters, <c>keep_trailing_newline=False</c>):
/// newlines are normalized to "\n", one trailing newline is dropped, <c>{%- -%}</c> / <c>{{- -}}</c> / <c>{#- -#}</c>
/// strip whitespace, a block or comment tag alone on its line loses the indentation before it and the newline after it,
/// comments vanish and <c>{% raw %}</c> content is data.
/// </summary>
internal sealed partial class JinjaLexer
{
    readonly string _src;
    readonly SourceMap _map;
    readonly List<Token> _tokens = new();
    int _pos;
    bool _lineStarting = true;

    JinjaLexer(string source, SourceMap map)
    {
        _src = source;
        _map = map;
    }

    /// <summary>Normalizes the source as Jinja does (newlines, trailing newline) and returns its tokens.</summary>
    public static List<Token> Tokenize(string template, out SourceMap map)
    {
        string source = Regex.Replace(template, "\r\n|\r", "\n");
        if (source.EndsWith('\n')) source = source[..^1];
        map = new SourceMap(source);
        var lexer = new JinjaLexer(source, map);
        lexer.Run();
        return lexer._tokens;
    }

    void Run()
    {
        while (_pos < _src.Length)
        {
            int tag = FindTagStart(_pos);
            if (tag < 0)
            {
                Emit(TokenKind.Data, _src[_pos..], _pos);
                break;
            }
            char kind = _src[tag + 1];
            char sign = tag + 2 < _src.Length && _src[tag + 2] is '-' or '+' ? _src[tag + 2] : '\0';
            int dataStart = _pos;
            string text = _src[_pos..tag];
            var raw = kind == '%' ? RawBegin().Match(_src, tag) : null;
            text = StripBeforeTag(text, kind, sign);
            if (text.Length > 0) Emit(TokenKind.Data, text, dataStart);
            _lineStarting = false;
            if (raw is { Success: true }) LexRaw(tag, raw);
            else if (kind == '#') LexComment(tag, tag + (sign == '\0' ? 2 : 3));
            else LexTag(kind == '%', tag, tag + (sign == '\0' ? 2 : 3));
        }
        _tokens.Add(new Token(TokenKind.End, "", null, _map.Line(_src.Length), _map.Column(_src.Length)));
    }

    int FindTagStart(int from)
    {
        for (int i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
            if (_src[i + 1] is '%' or '{' or '#') return i;
        return -1;
    }

    /// <summary>Whitespace control before a tag: "-" strips all whitespace, lstrip_blocks strips a line's indentation.</summary>
    string StripBeforeTag(string text, char kind, char sign)
    {
        if (sign == '-') return PyStr.Strip(text, null, left: false);
        if (sign == '+' || kind == '{') return text;
        int lineStart = text.LastIndexOf('\n') + 1;
        if ((lineStart > 0 || _lineStarting) && lineStart < text.Length && text[lineStart..].All(c => PyStr.IsSpace(c)))
            return text[..lineStart];
        return text;
    }

    void LexComment(int tag, int from)
    {
        int close = _src.IndexOf("#}", from, StringComparison.Ordinal);
        if (close < 0) throw Error("Missing end of comment tag", tag);
        char before = close - 1 >= from ? _src[close - 1] : '\0';
        _pos = AfterTagEnd(close + 2, before, trimNewline: true);
    }

    /// <summary>Where data resumes after a closing delimiter: "-" eats all whitespace, else trim_blocks eats one "\n".</summary>
    int AfterTagEnd(int end, char sign, bool trimNewline)
    {
        if (sign == '-')
            while (end < _src.Length && PyStr.IsSpace(_src[end])) end++;
        else if (sign != '+' && trimNewline && end < _src.Length && _src[end] == '\n')
            end++;
        _lineStarting = _src[end - 1] == '\n';
        return end;
    }

    void LexRaw(int tag, Match begin)
    {
        int bodyStart = tag + begin.Length;
        var end = RawEnd().Match(_src, bodyStart);
        if (!end.Success) throw Error("Missing end of raw directive", tag);
        char sign = end.Groups["sign"].Value is [var c] ? c : '\0';
        _lineStarting = _src[bodyStart - 1] == '\n'; // the raw tag's "-%}" may have eaten up to a newline
        string body = StripBeforeTag(_src[bodyStart..end.Index], '%', sign);
        if (body.Length > 0) Emit(TokenKind.Data, body, bodyStart);
        _pos = end.Index + end.Length; // the endraw rule already ate the whitespace its "-" or trim_blocks removes
        _lineStarting = _src[_pos - 1] == '\n';
    }

    void LexTag(bool block, int tag, int from)
    {
        Emit(block ? TokenKind.BlockBegin : TokenKind.VariableBegin, _src[tag..from], tag);
        var balance = new Stack<char>();
        int pos = from;
        while (true)
        {
            if (pos >= _src.Length)
                throw Error(block ? "Unexpected end of template inside a {% %} block (missing '%}')" :
                    "Unexpected end of template inside a {{ }} expression (missing '}}')", tag);
            if (balance.Count == 0 && TryTagEnd(block, pos, out int end, out string endText))
            {
                Emit(block ? TokenKind.BlockEnd : TokenKind.VariableEnd, endText, pos);
                char sign = endText[0] is '-' or '+' ? endText[0] : '\0';
                _pos = AfterTagEnd(pos + endText.Length, sign, trimNewline: block);
                return;
            }
            pos = LexExpressionToken(pos, balance);
        }
    }

    bool TryTagEnd(bool block, int pos, out int end, out string text)
    {
        string close = block ? "%}" : "}}";
        foreach (var candidate in block ? new[] { "+" + close, "-" + close, close } : new[] { "-" + close, close })
            if (string.CompareOrdinal(_src, pos, candidate, 0, candidate.Length) == 0)
            {
                end = pos + candidate.Length;
                text = candidate;
                return true;
            }
        end = pos;
        text = "";
        return false;
    }

    static readonly string[] Operators =
        ["//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"];

    int LexExpressionToken(int pos, Stack<char> balance)
    {
        if (PyStr.IsSpace(_src[pos]))
        {
            while (pos < _src.Length && PyStr.IsSpace(_src[pos])) pos++;
            return pos;
        }
        Match m;
        if ((m = FloatLiteral().Match(_src, pos)).Success && m.Index == pos && (pos == 0 || _src[pos - 1] != '.'))
        {
            Emit(TokenKind.Float, m.Value, pos, double.Parse(m.Value.Replace("_", ""), CultureInfo.InvariantCulture));
            return pos + m.Length;
        }
        if ((m = IntegerLiteral().Match(_src, pos)).Success && m.Index == pos)
        {
            Emit(TokenKind.Integer, m.Value, pos, ParseInteger(m.Value, pos));
            return pos + m.Length;
        }
        if ((m = NameToken().Match(_src, pos)).Success && m.Index == pos)
        {
            Emit(TokenKind.Name, m.Value, pos);
            return pos + m.Length;
        }
        if ((m = StringLiteral().Match(_src, pos)).Success && m.Index == pos)
        {
            string decoded;
            try { decoded = StringEscapes.Decode(m.Value[1..^1]); }
            catch (JinjaRuntimeError e) { throw Error(e.Message, pos); }
            Emit(TokenKind.String, m.Value, pos, decoded);
            return pos + m.Length;
        }
        foreach (var op in Operators)
        {
            if (string.CompareOrdinal(_src, pos, op, 0, op.Length) != 0) continue;
            if (op is "(" or "[" or "{") balance.Push(op switch { "(" => ')', "[" => ']', _ => '}' });
            else if (op is ")" or "]" or "}")
            {
                if (balance.Count == 0) throw Error($"unexpected '{op}'", pos);
                char expected = balance.Pop();
                if (expected != op[0]) throw Error($"unexpected '{op}', expected '{expected}'", pos);
            }
            Emit(TokenKind.Operator, op, pos);
            return pos + op.Length;
        }
        if (_src[pos] is '\'' or '"') throw Error("unterminated string literal", pos);
        throw Error($"unexpected char {PyFormat.StringRepr(_src[pos].ToString())}", pos);
    }

    long ParseInteger(string text, int pos)
    {
        string t = text.Replace("_", "").ToLowerInvariant();
        try
        {
            return t.Length > 1 && t[0] == '0' && t[1] is 'x' or 'o' or 'b'
                ? Convert.ToInt64(t[2..], t[1] switch { 'x' => 16, 'o' => 8, _ => 2 })
                : long.Parse(t, CultureInfo.InvariantCulture);
        }
        catch (OverflowException)
        {
            throw Error($"integer literal {text} is too large (this evaluator's integers are 64-bit)", pos);
        }
    }

    void Emit(TokenKind kind, string text, int offset, object? value = null) =>
        _tokens.Add(new Token(kind, text, value ?? (kind == TokenKind.Data ? text : null), _map.Line(offset), _map.Column(offset)));

    JinjaSyntaxError Error(string message, int offset) => new(message, _map.Line(offset), _map.Column(offset));

    [GeneratedRegex(@"\G[0-9](_?[0-9])*((\.[0-9](_?[0-9])*)?[eE][+\-]?[0-9](_?[0-9])*|\.[0-9](_?[0-9])*)")]
    private static partial Regex FloatLiteral();

    [GeneratedRegex(@"\G(0[bB](_?[01])+|0[oO](_?[0-7])+|0[xX](_?[0-9a-fA-F])+|[1-9](_?[0-9])*|0(_?0)*)")]
    private static partial Regex IntegerLiteral();

    [GeneratedRegex(@"\G[a-zA-Z_][a-zA-Z0-9_]*")]
    private static partial Regex NameToken();

    [GeneratedRegex(@"\G('([^'\\]*(?:\\.[^'\\]*)*)'|""([^""\\]*(?:\\.[^""\\]*)*)"")", RegexOptions.Singleline)]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"\G\{%(\-|\+|)\s*raw\s*(?:\-%\}\s*|%\})")]
    private static partial Regex RawBegin();

    [GeneratedRegex(@"\{%(?<sign>\-|\+|)\s*endraw\s*(?<close>\+%\}|\-%\}\s*|%\}\n?)")]
    private static partial Regex RawEnd();
}

/// <summary>A syntax error at a template position (turned into <see cref="ChatTemplateSyntaxException"/>).</summary>
internal sealed class JinjaSyntaxError(string message, int line, int column) : Exception(message)
{
    public int Line { get; } = line;
    public int Column { get; } = column;
}

/// <summary>Maps offsets of the normalized template source to 1-based line and column.</summary>
internal sealed class SourceMap
{
    readonly List<int> _lineStarts = [0];

    public SourceMap(string source)
    {
        for (int i = 0; i < source.Length; i++)
            if (source[i] == '\n') _lineStarts.Add(i + 1);
    }

    public int Line(int offset)
    {
        int i = _lineStarts.BinarySearch(offset);
        return (i >= 0 ? i : ~i - 1) + 1;
    }

    public int Column(int offset) => offset - _lineStarts[Line(offset) - 1] + 1;
}
