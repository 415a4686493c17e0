using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Kernels;

/// <summary>Device addresses of tensors, for kernel arguments.</summary>
internal static unsafe class TensorPointers
{
    static delegate* unmanaged<IntPtr, IntPtr> _storageDataPtr;

    /// <summary>
    /// Address of <paramref name="t"/>'s first element: its storage's base pointer (LibTorchSharp's <c>THSStorage_data_ptr</c>,
    /// which works for every dtype, unlike TorchSharp's typed <c>Storage&lt;T&gt;</c>) plus storage offset × element size.
    /// </summary>
    public static IntPtr DataPointer(Tensor t)
    {
        if (_storageDataPtr == null)
        {
            if (!NativeLibrary.TryLoad("LibTorchSharp", typeof(torch).Assembly, null, out var h) &&
                !NativeLibrary.TryLoad("libLibTorchSharp.so", typeof(torch).Assembly, null, out h))
                throw new DllNotFoundException("LibTorchSharp could not be located to read a tensor's data pointer.");
            _storageDataPtr = (delegate* unmanaged<IntPtr, IntPtr>)NativeLibrary.GetExport(h, "THSStorage_data_ptr");
        }
        var p = _storageDataPtr(t.Handle);
        if (p == IntPtr.Zero) throw new InvalidOperationException($"A {t.dtype} tensor on {t.device} has no data pointer (empty or not materialized).");
        return p + checked((nint)(t.storage_offset() * t.element_size()));
    }
}
