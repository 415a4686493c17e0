namespace QuanTA.Core.Export.Gguf;

/// <summary>The metadata value types of the GGUF specification (<c>gguf_metadata_value_type</c>), with their on-disk codes.</summary>
public enum GgufValueType : uint
{
    /// <summary>8-bit unsigned integer.</summary>
    UInt8 = 0,
    /// <summary>8-bit signed integer.</summary>
    Int8 = 1,
    /// <summary>16-bit unsigned integer.</summary>
    UInt16 = 2,
    /// <summary>16-bit signed integer.</summary>
    Int16 = 3,
    /// <summary>32-bit unsigned integer.</summary>
    UInt32 = 4,
    /// <summary>32-bit signed integer.</summary>
    Int32 = 5,
    /// <summary>IEEE-754 single.</summary>
    Float32 = 6,
    /// <summary>One byte, 0 or 1.</summary>
    Bool = 7,
    /// <summary>UTF-8 string: uint64 byte length, then the bytes (no terminator).</summary>
    String = 8,
    /// <summary>Array: element type (uint32), uint64 count, then the elements.</summary>
    Array = 9,
    /// <summary>64-bit unsigned integer.</summary>
    UInt64 = 10,
    /// <summary>64-bit signed integer.</summary>
    Int64 = 11,
    /// <summary>IEEE-754 double.</summary>
    Float64 = 12,
}

/// <summary>
/// One typed GGUF metadata value. Scalars hold the matching .NET type (<see cref="uint"/> for <see cref="GgufValueType.UInt32"/>, …);
/// arrays hold a .NET array of the element type's .NET type (<c>string[]</c>, <c>int[]</c>, <c>float[]</c>, …).
/// Build values with the static factories so type and payload always agree.
/// </summary>
public sealed record GgufValue
{
    /// <summary>The value's GGUF type.</summary>
    public GgufValueType Type { get; }
    /// <summary>For arrays, the element type; otherwise equal to <see cref="Type"/>.</summary>
    public GgufValueType ElementType { get; }
    /// <summary>The payload (a scalar, a string, or an array of scalars/strings).</summary>
    public object Value { get; }

    GgufValue(GgufValueType type, GgufValueType elementType, object value)
        => (Type, ElementType, Value) = (type, elementType, value);

    /// <summary>A uint8.</summary>
    public static GgufValue U8(byte v) => new(GgufValueType.UInt8, GgufValueType.UInt8, v);
    /// <summary>An int8.</summary>
    public static GgufValue I8(sbyte v) => new(GgufValueType.Int8, GgufValueType.Int8, v);
    /// <summary>A uint16.</summary>
    public static GgufValue U16(ushort v) => new(GgufValueType.UInt16, GgufValueType.UInt16, v);
    /// <summary>An int16.</summary>
    public static GgufValue I16(short v) => new(GgufValueType.Int16, GgufValueType.Int16, v);
    /// <summary>A uint32.</summary>
    public static GgufValue U32(uint v) => new(GgufValueType.UInt32, GgufValueType.UInt32, v);
    /// <summary>An int32.</summary>
    public static GgufValue I32(int v) => new(GgufValueType.Int32, GgufValueType.Int32, v);
    /// <summary>A uint64.</summary>
    public static GgufValue U64(ulong v) => new(GgufValueType.UInt64, GgufValueType.UInt64, v);
    /// <summary>An int64.</summary>
    public static GgufValue I64(long v) => new(GgufValueType.Int64, GgufValueType.Int64, v);
    /// <summary>A float32.</summary>
    public static GgufValue F32(float v) => new(GgufValueType.Float32, GgufValueType.Float32, v);
    /// <summary>A float64.</summary>
    public static GgufValue F64(double v) => new(GgufValueType.Float64, GgufValueType.Float64, v);
    /// <summary>A bool.</summary>
    public static GgufValue Bool(bool v) => new(GgufValueType.Bool, GgufValueType.Bool, v);
    /// <summary>A UTF-8 string.</summary>
    public static GgufValue Str(string v) => new(GgufValueType.String, GgufValueType.String, v ?? throw new ArgumentNullException(nameof(v)));

    /// <summary>An array of strings.</summary>
    public static GgufValue Array(IReadOnlyList<string> v) => new(GgufValueType.Array, GgufValueType.String, v.ToArray());
    /// <summary>An array of int32.</summary>
    public static GgufValue Array(IReadOnlyList<int> v) => new(GgufValueType.Array, GgufValueType.Int32, v.ToArray());
    /// <summary>An array of uint32.</summary>
    public static GgufValue Array(IReadOnlyList<uint> v) => new(GgufValueType.Array, GgufValueType.UInt32, v.ToArray());
    /// <summary>An array of float32.</summary>
    public static GgufValue Array(IReadOnlyList<float> v) => new(GgufValueType.Array, GgufValueType.Float32, v.ToArray());
    /// <summary>An array of int64.</summary>
    public static GgufValue Array(IReadOnlyList<long> v) => new(GgufValueType.Array, GgufValueType.Int64, v.ToArray());
    /// <summary>An array of float64.</summary>
    public static GgufValue Array(IReadOnlyList<double> v) => new(GgufValueType.Array, GgufValueType.Float64, v.ToArray());
    /// <summary>An array of bools.</summary>
    public static GgufValue Array(IReadOnlyList<bool> v) => new(GgufValueType.Array, GgufValueType.Bool, v.ToArray());
    /// <summary>An array of uint8.</summary>
    public static GgufValue Array(IReadOnlyList<byte> v) => new(GgufValueType.Array, GgufValueType.UInt8, v.ToArray());
    /// <summary>An array of int8.</summary>
    public static GgufValue Array(IReadOnlyList<sbyte> v) => new(GgufValueType.Array, GgufValueType.Int8, v.ToArray());
    /// <summary>An array of uint16.</summary>
    public static GgufValue Array(IReadOnlyList<ushort> v) => new(GgufValueType.Array, GgufValueType.UInt16, v.ToArray());
    /// <summary>An array of int16.</summary>
    public static GgufValue Array(IReadOnlyList<short> v) => new(GgufValueType.Array, GgufValueType.Int16, v.ToArray());
    /// <summary>An array of uint64.</summary>
    public static GgufValue Array(IReadOnlyList<ulong> v) => new(GgufValueType.Array, GgufValueType.UInt64, v.ToArray());
}
