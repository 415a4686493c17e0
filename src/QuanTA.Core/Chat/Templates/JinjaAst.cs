namespace QuanTA.Core.Chat.Templates;

// The parsed template: immutable nodes, each with its 1-based line and column for error messages.

internal abstract record Node(int Line, int Column);

// ---- statements ----

internal abstract record Stmt(int Line, int Column) : Node(Line, Column);

internal sealed record TextStmt(string Text, int Line, int Column) : Stmt(Line, Column);

internal sealed record OutputStmt(Expr Value, int Line, int Column) : Stmt(Line, Column);

internal sealed record IfStmt(IReadOnlyList<(Expr Test, IReadOnlyList<Stmt> Body)> Branches, IReadOnlyList<Stmt>? Else, int Line, int Column)
    : Stmt(Line, Column);

internal sealed record ForStmt(Target Target, Expr Iterable, Expr? Filter, IReadOnlyList<Stmt> Body, IReadOnlyList<Stmt>? Else,
    int Line, int Column) : Stmt(Line, Column);

internal sealed record SetStmt(Target Target, Expr Value, int Line, int Column) : Stmt(Line, Column);

/// <summary><c>{% set name %}...{% endset %}</c>, optionally filtered (<c>{% set name | upper %}</c>).</summary>
internal sealed record SetBlockStmt(Target Target, IReadOnlyList<Stmt> Body, IReadOnlyList<FilterExpr> Filters, int Line, int Column)
    : Stmt(Line, Column);

internal sealed record MacroStmt(string Name, IReadOnlyList<string> Parameters, IReadOnlyList<Expr?> Defaults, IReadOnlyList<Stmt> Body,
    int Line, int Column) : Stmt(Line, Column);

/// <summary><c>{% filter name(args) %}...{% endfilter %}</c>: the body's output goes through the filter(s).</summary>
internal sealed record FilterBlockStmt(IReadOnlyList<FilterExpr> Filters, IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);

/// <summary><c>{% with a = 1 %}...{% endwith %}</c>: the body runs in a scope with those assignments.</summary>
internal sealed record WithStmt(IReadOnlyList<(Target Target, Expr Value)> Assignments, IReadOnlyList<Stmt> Body, int Line, int Column)
    : Stmt(Line, Column);

/// <summary>A body with no semantics of its own (transformers' <c>{% generation %}</c> tag renders its body unchanged).</summary>
internal sealed record BlockStmt(IReadOnlyList<Stmt> Body, int Line, int Column) : Stmt(Line, Column);

internal sealed record BreakStmt(int Line, int Column) : Stmt(Line, Column);

internal sealed record ContinueStmt(int Line, int Column) : Stmt(Line, Column);

// ---- assignment targets ----

internal abstract record Target(int Line, int Column) : Node(Line, Column);

internal sealed record NameTarget(string Name, int Line, int Column) : Target(Line, Column);

internal sealed record TupleTarget(IReadOnlyList<Target> Items, int Line, int Column) : Target(Line, Column);

/// <summary><c>ns.attr</c> on the left of <c>{% set %}</c> (only namespace objects accept it).</summary>
internal sealed record NamespaceTarget(string Name, string Attribute, int Line, int Column) : Target(Line, Column);

// ---- expressions ----

internal abstract record Expr(int Line, int Column) : Node(Line, Column);

internal sealed record ConstExpr(object? Value, int Line, int Column) : Expr(Line, Column);

internal sealed record NameExpr(string Name, int Line, int Column) : Expr(Line, Column);

internal sealed record ListExpr(IReadOnlyList<Expr> Items, int Line, int Column) : Expr(Line, Column);

internal sealed record TupleExpr(IReadOnlyList<Expr> Items, int Line, int Column) : Expr(Line, Column);

internal sealed record DictExpr(IReadOnlyList<(Expr Key, Expr Value)> Items, int Line, int Column) : Expr(Line, Column);

/// <summary><c>obj.name</c>: attribute first, then item (Jinja's <c>getattr</c>).</summary>
internal sealed record GetAttrExpr(Expr Object, string Name, int Line, int Column) : Expr(Line, Column);

/// <summary><c>obj[key]</c>: item first, then attribute (Jinja's <c>getitem</c>); the key may be a <see cref="SliceExpr"/>.</summary>
internal sealed record GetItemExpr(Expr Object, Expr Key, int Line, int Column) : Expr(Line, Column);

internal sealed record SliceExpr(Expr? Start, Expr? Stop, Expr? Step, int Line, int Column) : Expr(Line, Column);

internal sealed record CallExpr(Expr Callee, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs, int Line, int Column)
    : Expr(Line, Column);

/// <summary><c>value | name(args)</c>; <see cref="Input"/> is null inside filter blocks (the body is the input).</summary>
internal sealed record FilterExpr(Expr? Input, string Name, IReadOnlyList<Expr> Args, IReadOnlyList<(string Name, Expr Value)> Kwargs,
    int Line, int Column) : Expr(Line, Column);

/// <summary><c>value is [not] name(args)</c>.</summary>
internal sealed record TestExpr(Expr Input, string Name, IReadOnlyList<Expr> Args, bool Negated, int Line, int Column) : Expr(Line, Column);

/// <summary>Unary <c>-</c> / <c>+</c>.</summary>
internal sealed record UnaryExpr(string Op, Expr Operand, int Line, int Column) : Expr(Line, Column);

internal sealed record NotExpr(Expr Operand, int Line, int Column) : Expr(Line, Column);

/// <summary>Arithmetic: <c>+ - * / // % **</c>.</summary>
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Line, int Column) : Expr(Line, Column);

/// <summary><c>a ~ b ~ c</c>: string concatenation of <c>str()</c> of each operand.</summary>
internal sealed record ConcatExpr(IReadOnlyList<Expr> Items, int Line, int Column) : Expr(Line, Column);

/// <summary>Python <c>and</c> / <c>or</c> (return an operand, short-circuit).</summary>
internal sealed record LogicalExpr(bool IsAnd, Expr Left, Expr Right, int Line, int Column) : Expr(Line, Column);

/// <summary>A comparison chain <c>a &lt; b &lt;= c</c>; operators: == != &lt; &lt;= &gt; &gt;= in notin.</summary>
internal sealed record CompareExpr(Expr First, IReadOnlyList<(string Op, Expr Operand)> Rest, int Line, int Column) : Expr(Line, Column);

/// <summary><c>then if test else otherwise</c>; without else the result is undefined when the test fails.</summary>
internal sealed record CondExpr(Expr Test, Expr Then, Expr? Else, int Line, int Column) : Expr(Line, Column);
