namespace QuanTA.Core.Chat;

/// <summary>
/// The Alpaca prompt as LLM-Adapters trains on commonsense_170k and math_10k (the data of the QuanTA paper's commonsense and
/// arithmetic experiments): the instruction template of its <c>finetune.py</c> <c>generate_prompt</c>, with the output left
/// out, so that <c>prompt + output</c> is exactly the text it trains on.
/// </summary>
/// <remarks>
/// Copied character for character from <c>generate_prompt</c> in <c>finetune.py</c> of github.com/AGI-Edgerunners/LLM-Adapters
/// (commit 281b7a783324e76c4c80a6e7ceeda7e6a36ebec3, unchanged at the repository's head 816657208af4db747803f87ba40a4c71383fed7a).
/// Its Python f-string keeps the source indentation: every line after the first starts with 16 spaces (the blank lines too),
/// the first line ends with one space (with input) or two (without), and the prompt ends with the indentation after
/// <c>### Response:</c>. The input template is used when <c>input</c> is non-empty (Python's <c>if data_point["input"]:</c>).
/// The official QuanTA repository (quanta-fine-tuning/quanta, run/utils/templates.py) prompts its own runs differently:
/// the cleaned instruction + <c>"\nAnswer:"</c>.
/// </remarks>
public static class AlpacaPrompt
{
    /// <summary>The 16 spaces of indentation that the f-string puts in front of every line after the first.</summary>
    const string Indent = "                ";

    const string WithInputHeader = "Below is an instruction that describes a task, paired with an input that provides further context. " +
                                   "Write a response that appropriately completes the request. \n\n";

    const string NoInputHeader = "Below is an instruction that describes a task. " +
                                 "Write a response that appropriately completes the request.  \n\n";

    /// <summary>The prompt for an instruction and an optional input; the output (the completion) follows it directly.</summary>
    /// <param name="instruction">The Alpaca <c>instruction</c>.</param>
    /// <param name="input">The Alpaca <c>input</c>; null or empty selects the template without input.</param>
    public static string Build(string instruction, string? input)
    {
        ArgumentNullException.ThrowIfNull(instruction);
        return string.IsNullOrEmpty(input)
            ? string.Concat(NoInputHeader,
                Indent + "### Instruction:\n", Indent + instruction + "\n", Indent + "\n",
                Indent + "### Response:\n", Indent)
            : string.Concat(WithInputHeader,
                Indent + "### Instruction:\n", Indent + instruction + "\n", Indent + "\n",
                Indent + "### Input:\n", Indent + input + "\n", Indent + "\n",
                Indent + "### Response:\n", Indent);
    }

    /// <summary>The user turn of an Alpaca example seen as a chat: the instruction, plus <c>"\n\n"</c> and the input when there is one.</summary>
    /// <param name="instruction">The Alpaca <c>instruction</c>.</param>
    /// <param name="input">The Alpaca <c>input</c> (null or empty: none).</param>
    public static string UserTurn(string instruction, string? input) =>
        string.IsNullOrEmpty(input) ? instruction : instruction + "\n\n" + input;
}
