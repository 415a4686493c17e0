using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace QuanTA.MLNet.Internals;

/// <summary>
/// The one place that reaches into ML.NET internals by reflection. A third-party assembly cannot make a transformer that
/// <c>mlContext.Model.Save/Load</c> understands with public API only (ML.NET's friends-only <c>ModelSaveContext</c> members,
/// <c>ModelLoadContext</c>, <c>VersionInfo</c>, loader registration; see <c>docs</c> and dotnet/machinelearning#4911), so
/// every such member is resolved here, once, lazily. <see cref="SelfTest"/> checks all of them and throws a
/// <see cref="MlNetCompatibilityException"/> naming the missing member and the ML.NET version if a future ML.NET changes.
/// </summary>
internal static class MlNetInternals
{
    const BindingFlags Inst = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance;
    const BindingFlags Stat = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static;

    static readonly Assembly CoreAssembly = typeof(ICanSaveModel).Assembly;   // Microsoft.ML.Core

    /// <summary>The ML.NET (Microsoft.ML.Core) version found at run time, for error messages.</summary>
    public static string MlNetVersion =>
        CoreAssembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? CoreAssembly.GetName().Version?.ToString() ?? "unknown";

    // ---- resolution helpers: each member is resolved on first use and cached; failures name the member ----

    static Type CoreType(string fullName) =>
        CoreAssembly.GetType(fullName, throwOnError: false) ?? throw Missing($"type {fullName}");

    static T Req<T>(T? member, string what) where T : class => member ?? throw Missing(what);

    static MlNetCompatibilityException Missing(string what) => new(
        $"QuanTA.MLNet cannot find the ML.NET internal member '{what}' in Microsoft.ML {MlNetVersion}. " +
        "QuanTA.MLNet was built and tested against Microsoft.ML 5.0.x; saving/loading QuanTA models with mlContext.Model " +
        "needs a compatible ML.NET version. Use the plain adapter export (QuanTAFineTuneTransformer.ExportAdapter) meanwhile.",
        what, MlNetVersion);

    static readonly Lazy<Type> VersionInfoType = new(() => CoreType("Microsoft.ML.VersionInfo"));
    static readonly Lazy<Type> ModelLoadContextType = new(() => CoreType("Microsoft.ML.ModelLoadContext"));
    static readonly Lazy<Type> SignatureLoadModelType = new(() => CoreType("Microsoft.ML.SignatureLoadModel"));
    static readonly Lazy<Type> LoadableClassAttributeType = new(() => CoreType("Microsoft.ML.LoadableClassAttribute"));
    static readonly Lazy<Type> LoadableClassInfoType = new(() => Req(
        typeof(ComponentCatalog).GetNestedType("LoadableClassInfo", BindingFlags.NonPublic | BindingFlags.Public),
        "ComponentCatalog.LoadableClassInfo"));
    static readonly Lazy<Type> InternalCatalogType = new(() => Req(
        typeof(TransformsCatalog).GetInterfaces().FirstOrDefault(i => i.Name == "IInternalCatalog"), "IInternalCatalog"));
    static readonly Lazy<Type> HostEnvironmentInternalType = new(() => CoreType("Microsoft.ML.Runtime.IHostEnvironmentInternal"));

    static readonly Lazy<ConstructorInfo> VersionInfoCtor = new(() => Req(VersionInfoType.Value.GetConstructor(Inst, null,
        [typeof(string), typeof(uint), typeof(uint), typeof(uint), typeof(string), typeof(string), typeof(string)], null),
        "VersionInfo..ctor(string, uint, uint, uint, string, string, string)"));

    // save side: ModelSaveContext is public, its members are internal
    static readonly Lazy<MethodInfo> SaveSetVersionInfo = new(() => Req(typeof(ModelSaveContext).GetMethod("SetVersionInfo", Inst,
        null, [VersionInfoType.Value], null), "ModelSaveContext.SetVersionInfo(VersionInfo)"));
    static readonly Lazy<FieldInfo> SaveWriter = new(() => Req(typeof(ModelSaveContext).GetField("Writer", Inst), "ModelSaveContext.Writer"));
    static readonly Lazy<MethodInfo> SaveCheckAtModel = new(() => Req(typeof(ModelSaveContext).GetMethod("CheckAtModel", Inst,
        null, Type.EmptyTypes, null), "ModelSaveContext.CheckAtModel()"));
    static readonly Lazy<MethodInfo> SaveBinary = new(() => Req(typeof(ModelSaveContext).GetMethod("SaveBinaryStream", Inst,
        null, [typeof(string), typeof(Action<BinaryWriter>)], null), "ModelSaveContext.SaveBinaryStream(string, Action<BinaryWriter>)"));

    // load side: ModelLoadContext is internal and reaches our loader typed as object
    static readonly Lazy<FieldInfo> LoadReader = new(() => Req(ModelLoadContextType.Value.GetField("Reader", Inst), "ModelLoadContext.Reader"));
    static readonly Lazy<MethodInfo> LoadCheckAtModel = new(() => Req(ModelLoadContextType.Value.GetMethod("CheckAtModel", Inst,
        null, [VersionInfoType.Value], null), "ModelLoadContext.CheckAtModel(VersionInfo)"));
    static readonly Lazy<MethodInfo> LoadBinary = new(() => Req(ModelLoadContextType.Value.GetMethod("TryLoadBinaryStream", Inst,
        null, [typeof(string), typeof(Action<BinaryReader>)], null), "ModelLoadContext.TryLoadBinaryStream(string, Action<BinaryReader>)"));

    // loader registration
    static readonly Lazy<ConstructorInfo> LoadableClassAttributeCtor = new(() => Req(LoadableClassAttributeType.Value.GetConstructor(Inst,
        null, [typeof(Type), typeof(Type), typeof(Type), typeof(string), typeof(string[])], null),
        "LoadableClassAttribute..ctor(Type, Type, Type, string, string[])"));
    static readonly Lazy<ConstructorInfo> LoadableClassInfoCtor = new(() => Req(LoadableClassInfoType.Value.GetConstructor(Inst, null,
        [LoadableClassAttributeType.Value.BaseType!, typeof(MethodInfo), typeof(ConstructorInfo), typeof(MethodInfo), typeof(bool)], null),
        "ComponentCatalog.LoadableClassInfo..ctor(LoadableClassAttributeBase, MethodInfo, ConstructorInfo, MethodInfo, bool)"));
    static readonly Lazy<MethodInfo> CatalogAddClass = new(() => Req(typeof(ComponentCatalog).GetMethod("AddClass", Inst),
        "ComponentCatalog.AddClass(LoadableClassInfo, string[], bool)"));
    static readonly Lazy<MethodInfo> CatalogFindLoadable = new(() => Req(typeof(ComponentCatalog).GetMethod("FindLoadableClasses", Inst,
        null, [typeof(string)], null), "ComponentCatalog.FindLoadableClasses(string)"));

    // environments
    static readonly Lazy<PropertyInfo> CatalogEnvironment = new(() => Req(InternalCatalogType.Value.GetProperty("Environment", Inst),
        "IInternalCatalog.Environment"));
    static readonly Lazy<PropertyInfo> EnvGpuDeviceId = new(() => Req(HostEnvironmentInternalType.Value.GetProperty("GpuDeviceId", Inst),
        "IHostEnvironmentInternal.GpuDeviceId"));
    static readonly Lazy<PropertyInfo> EnvFallbackToCpu = new(() => Req(HostEnvironmentInternalType.Value.GetProperty("FallbackToCpu", Inst),
        "IHostEnvironmentInternal.FallbackToCpu"));
    static readonly Lazy<PropertyInfo> EnvSeed = new(() => Req(HostEnvironmentInternalType.Value.GetProperty("Seed", Inst),
        "IHostEnvironmentInternal.Seed"));
    static readonly Lazy<MethodInfo> ContractsCheckAlive = new(() => Req(CoreType("Microsoft.ML.Runtime.Contracts").GetMethod("CheckAlive",
        Stat, null, [typeof(IHostEnvironment)], null), "Contracts.CheckAlive(IHostEnvironment)"));

    // schema shapes
    static readonly Lazy<ConstructorInfo> SchemaShapeColumnCtor = new(() => Req(typeof(SchemaShape.Column).GetConstructor(Inst, null,
        [typeof(string), typeof(SchemaShape.Column.VectorKind), typeof(DataViewType), typeof(bool), typeof(SchemaShape)], null),
        "SchemaShape.Column..ctor(string, VectorKind, DataViewType, bool, SchemaShape)"));

    /// <summary>Resolves every member used by QuanTA.MLNet and throws a <see cref="MlNetCompatibilityException"/> naming the first missing one.</summary>
    public static void SelfTest()
    {
        object[] all =
        [
            VersionInfoCtor.Value, SaveSetVersionInfo.Value, SaveWriter.Value, SaveCheckAtModel.Value, SaveBinary.Value,
            LoadReader.Value, LoadCheckAtModel.Value, LoadBinary.Value, SignatureLoadModelType.Value,
            LoadableClassAttributeCtor.Value, LoadableClassInfoCtor.Value, CatalogAddClass.Value, CatalogFindLoadable.Value,
            CatalogEnvironment.Value, EnvGpuDeviceId.Value, EnvFallbackToCpu.Value, EnvSeed.Value, ContractsCheckAlive.Value,
            SchemaShapeColumnCtor.Value,
        ];
        GC.KeepAlive(all);
        // a cheap live check that the constructed objects behave: VersionInfo with an 8-char signature, a SchemaShape column
        _ = VersionInfo("QTSELFTS", 0x00010001, 0x00010001, 0x00010001, "QuanTASelfTest", typeof(MlNetInternals).Assembly);
        _ = Column("x", SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false);
    }

    static Exception Unwrap(TargetInvocationException e) => e.InnerException ?? e;

    static object? Call(MethodInfo m, object? target, params object?[] args)
    {
        try { return m.Invoke(target, args); }
        catch (TargetInvocationException e) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(Unwrap(e)).Throw(); throw; }
    }

    // ---- VersionInfo ----

    /// <summary>Builds an ML.NET <c>VersionInfo</c> (boxed). <paramref name="modelSignature"/> must be exactly 8 ASCII chars.</summary>
    public static object VersionInfo(string modelSignature, uint verWritten, uint verReadable, uint verWeCanReadBack,
        string loaderSignature, Assembly loaderAssembly)
    {
        if (modelSignature.Length != 8) throw new ArgumentException("An ML.NET model signature is exactly 8 characters.", nameof(modelSignature));
        try
        {
            return VersionInfoCtor.Value.Invoke([modelSignature, verWritten, verReadable, verWeCanReadBack,
                loaderAssembly.FullName, loaderSignature, null]);
        }
        catch (TargetInvocationException e) { throw Unwrap(e); }
    }

    // ---- save side ----

    /// <summary><c>ctx.CheckAtModel(); ctx.SetVersionInfo(ver)</c>.</summary>
    public static void SetVersionInfo(ModelSaveContext ctx, object versionInfo)
    {
        Call(SaveCheckAtModel.Value, ctx);
        Call(SaveSetVersionInfo.Value, ctx, versionInfo);
    }

    /// <summary>The writer of the model's main stream (<c>Model.key</c>).</summary>
    public static BinaryWriter Writer(ModelSaveContext ctx) => (BinaryWriter)SaveWriter.Value.GetValue(ctx)!;

    /// <summary>Writes an extra named binary stream (a zip entry next to <c>Model.key</c>).</summary>
    public static void SaveBinaryStream(ModelSaveContext ctx, string name, Action<BinaryWriter> write) =>
        Call(SaveBinary.Value, ctx, name, write);

    // ---- load side ----

    /// <summary>Checks that <paramref name="loadContext"/> (an internal <c>ModelLoadContext</c>) is at a model of this version.</summary>
    public static void CheckAtModel(object loadContext, object versionInfo)
    {
        CheckLoadContext(loadContext);
        Call(LoadCheckAtModel.Value, loadContext, versionInfo);
    }

    /// <summary>The reader of the model's main stream.</summary>
    public static BinaryReader Reader(object loadContext)
    {
        CheckLoadContext(loadContext);
        return (BinaryReader)LoadReader.Value.GetValue(loadContext)!;
    }

    /// <summary>Reads an extra named binary stream written by <see cref="SaveBinaryStream"/>; false when absent.</summary>
    public static bool TryLoadBinaryStream(object loadContext, string name, Action<BinaryReader> read)
    {
        CheckLoadContext(loadContext);
        return (bool)Call(LoadBinary.Value, loadContext, name, read)!;
    }

    static void CheckLoadContext(object ctx)
    {
        if (!ModelLoadContextType.Value.IsInstanceOfType(ctx))
            throw new ArgumentException($"Expected an ML.NET ModelLoadContext, got {ctx?.GetType().FullName ?? "null"}.");
    }

    // ---- loader registration ----

    static readonly object RegisterLock = new();

    /// <summary>
    /// Equivalent of <c>[assembly: LoadableClass(typeof(T), null, typeof(SignatureLoadModel), userName, loaderSignature)]</c>
    /// for one <see cref="ComponentCatalog"/>: <paramref name="create"/> must be <c>static T Create(IHostEnvironment env, object ctx)</c>.
    /// Idempotent.
    /// </summary>
    public static void RegisterLoader(ComponentCatalog catalog, Type instanceType, string userName, string loaderSignature, MethodInfo create)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        lock (RegisterLock)
        {
            if (IsLoaderRegistered(catalog, loaderSignature)) return;
            object attr, info;
            try
            {
                attr = LoadableClassAttributeCtor.Value.Invoke([instanceType, null, SignatureLoadModelType.Value, userName, new[] { loaderSignature }]);
                info = LoadableClassInfoCtor.Value.Invoke([attr, null, null, create, true]);
            }
            catch (TargetInvocationException e) { throw Unwrap(e); }
            try { CatalogAddClass.Value.Invoke(catalog, [info, new[] { loaderSignature }, true]); }
            catch (TargetInvocationException e) when (e.InnerException?.Message.Contains("already", StringComparison.OrdinalIgnoreCase) == true) { }
            catch (TargetInvocationException e) { throw Unwrap(e); }
        }
    }

    /// <summary>True when a loader with this signature is registered in <paramref name="catalog"/>.</summary>
    public static bool IsLoaderRegistered(ComponentCatalog catalog, string loaderSignature) =>
        ((Array)Call(CatalogFindLoadable.Value, catalog, loaderSignature)!).Length > 0;

    // ---- environments ----

    /// <summary>The <see cref="IHostEnvironment"/> behind any ML.NET catalog object (<c>mlContext.Transforms</c>, trainers catalogs).</summary>
    public static IHostEnvironment GetEnvironment(object catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        if (!InternalCatalogType.Value.IsInstanceOfType(catalog))
            throw new ArgumentException($"{catalog.GetType().FullName} is not an ML.NET catalog.", nameof(catalog));
        return (IHostEnvironment)CatalogEnvironment.Value.GetValue(catalog)!;
    }

    /// <summary><c>mlContext.GpuDeviceId</c> as seen through any environment (null when not set or not available).</summary>
    public static int? GpuDeviceId(IHostEnvironment env) =>
        HostEnvironmentInternalType.Value.IsInstanceOfType(env) ? (int?)EnvGpuDeviceId.Value.GetValue(env) : null;

    /// <summary><c>mlContext.FallbackToCpu</c> as seen through any environment (true when not available).</summary>
    public static bool FallbackToCpu(IHostEnvironment env) =>
        !HostEnvironmentInternalType.Value.IsInstanceOfType(env) || (bool)EnvFallbackToCpu.Value.GetValue(env)!;

    /// <summary>The MLContext seed as seen through any environment (null when not set).</summary>
    public static int? Seed(IHostEnvironment env) =>
        HostEnvironmentInternalType.Value.IsInstanceOfType(env) ? (int?)EnvSeed.Value.GetValue(env) : null;

    /// <summary>ML.NET's <c>CheckAlive</c>: throws when ML.NET's (internal) cancellation of the environment was requested.</summary>
    public static void CheckAlive(IHostEnvironment env) => Call(ContractsCheckAlive.Value, null, env);

    // ---- schema shapes ----

    /// <summary>A <see cref="SchemaShape.Column"/> (its constructor is internal).</summary>
    public static SchemaShape.Column Column(string name, SchemaShape.Column.VectorKind kind, DataViewType itemType, bool isKey,
        SchemaShape? annotations = null)
    {
        try { return (SchemaShape.Column)SchemaShapeColumnCtor.Value.Invoke([name, kind, itemType, isKey, annotations]); }
        catch (TargetInvocationException e) { throw Unwrap(e); }
    }

    /// <summary>The schema shape of a data view schema (public equivalent of the internal <c>SchemaShape.Create</c>).</summary>
    public static SchemaShape ShapeOf(DataViewSchema schema) => new(schema.Where(c => !c.IsHidden).Select(ColumnShape));

    static SchemaShape.Column ColumnShape(DataViewSchema.Column c)
    {
        var type = c.Type;
        var kind = SchemaShape.Column.VectorKind.Scalar;
        if (type is VectorDataViewType v)
        {
            kind = v.IsKnownSize ? SchemaShape.Column.VectorKind.Vector : SchemaShape.Column.VectorKind.VariableVector;
            type = v.ItemType;
        }
        var annotations = new SchemaShape(c.Annotations.Schema.Select(a => Column(a.Name,
            a.Type is VectorDataViewType av ? (av.IsKnownSize ? SchemaShape.Column.VectorKind.Vector : SchemaShape.Column.VectorKind.VariableVector)
                                            : SchemaShape.Column.VectorKind.Scalar,
            ItemTypeForShape(a.Type is VectorDataViewType av2 ? av2.ItemType : a.Type), a.Type is KeyDataViewType)));
        return Column(c.Name, kind, ItemTypeForShape(type), type is KeyDataViewType, annotations);
    }

    /// <summary>SchemaShape columns describe a key column by its raw number type plus <c>IsKey</c>.</summary>
    public static DataViewType ItemTypeForShape(DataViewType type) => type is KeyDataViewType key
        ? key.RawType == typeof(uint) ? NumberDataViewType.UInt32
        : key.RawType == typeof(ulong) ? NumberDataViewType.UInt64
        : key.RawType == typeof(ushort) ? NumberDataViewType.UInt16 : NumberDataViewType.Byte
        : type;
}
