namespace QuanTA.Core.Chat;

/// <summary>The layout of one line of a chat / instruction JSONL file (see <see cref="ChatDataFile"/>).</summary>
public enum ChatDataFormat
{
    /// <summary>Tell from the keys of the first non-empty line.</summary>
    Auto,
    /// <summary>
    /// A conversation: <c>{"messages": [{"role": ..., "content": ...}, ...]}</c> (TRL conversational), or ShareGPT's
    /// <c>{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}</c>.
    /// </summary>
    Messages,
    /// <summary>Plain text: <c>{"prompt": ..., "completion": ...}</c>.</summary>
    PromptCompletion,
    /// <summary>
    /// Alpaca instructions: <c>{"instruction": ..., "input": ..., "output": ...}</c> with <c>input</c> optional (the layout of
    /// LLM-Adapters' commonsense_170k and math_10k used by the QuanTA paper).
    /// </summary>
    Alpaca,
}
