namespace QuanTA.Core.Chat;

/// <summary>
/// One training example of a chat / instruction file, in both shapes a trainer may want: a conversation for a chat template
/// and a plain prompt → completion pair.
/// </summary>
/// <param name="LineNumber">1-based line of the file where the example starts.</param>
/// <param name="Messages">
/// The conversation. For <see cref="ChatDataFormat.Messages"/> the file's turns; for the other formats two turns: the user's
/// (the prompt; for Alpaca the instruction, plus <c>"\n\n"</c> and the input when there is one) and the assistant's (the
/// completion).
/// </param>
/// <param name="Prompt">
/// The plain prompt text: the <c>prompt</c> value, or for Alpaca the LLM-Adapters instruction template filled in (see
/// <see cref="AlpacaPrompt"/>). Empty for <see cref="ChatDataFormat.Messages"/>, where the model's chat template renders it.
/// </param>
/// <param name="Completion">The text to learn: the completion / output, or the last assistant turn of a conversation.</param>
public sealed record ChatExample(int LineNumber, IReadOnlyList<ChatTurn> Messages, string Prompt, string Completion);

/// <summary>Everything read from one chat / instruction file.</summary>
/// <param name="Source">The file name (or the name given to <see cref="ChatDataFile.Parse"/>), as used in error messages.</param>
/// <param name="Format">The format of the file: the one passed in, or the one detected from its first non-empty line.</param>
/// <param name="Examples">The examples in file order; never empty.</param>
public sealed record ChatDataSet(string Source, ChatDataFormat Format, IReadOnlyList<ChatExample> Examples);
