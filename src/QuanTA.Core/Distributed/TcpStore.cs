using System.Net;
using System.Net.Sockets;

namespace QuanTA.Core.Distributed;

/// <summary>
/// A minimal key/value rendezvous store over TCP, in the manner of PyTorch's <c>TCPStore</c>: rank 0 hosts it on
/// <c>MASTER_ADDR:MASTER_PORT</c> and every rank (rank 0 included) talks to it through one connection. It carries only
/// small control messages (the 128-byte NCCL unique id, barrier marks), never tensors. Every wait is bounded by the
/// group's timeout; a rank that never arrives, or whose connection drops, ends the wait with an error naming it.
/// </summary>
/// <remarks>
/// Rank 0 must keep its store alive until the other ranks are done with it (finish with a <see cref="Barrier"/>, then dispose).
/// The server binds to the loopback interface when <c>MASTER_ADDR</c> is a loopback address, otherwise to all IPv4 interfaces.
/// </remarks>
public sealed class TcpStore : IDisposable
{
    readonly ProcessGroupOptions _options;
    readonly TcpStoreServer? _server;
    readonly TcpClient _client;
    readonly BinaryReader _reader;
    readonly BinaryWriter _writer;
    readonly object _io = new();
    readonly Dictionary<string, int> _barrierGenerations = new();
    bool _disposed;

    TcpStore(ProcessGroupOptions options, TcpStoreServer? server, TcpClient client)
    {
        _options = options; _server = server; _client = client;
        var stream = client.GetStream();
        _reader = new BinaryReader(stream); _writer = new BinaryWriter(stream);
    }

    /// <summary>This process's rank.</summary>
    public int Rank => _options.Rank;
    /// <summary>Number of ranks.</summary>
    public int WorldSize => _options.WorldSize;
    /// <summary>The port the store listens on (useful when rank 0 was asked for port 0).</summary>
    public int Port { get; }

    TcpStore(ProcessGroupOptions options, TcpStoreServer? server, TcpClient client, int port) : this(options, server, client) => Port = port;

    /// <summary>
    /// Joins the rendezvous: rank 0 starts the server and connects to it; other ranks connect, retrying until
    /// <see cref="ProcessGroupOptions.Timeout"/>. Every rank then announces itself.
    /// </summary>
    /// <exception cref="TimeoutException">rank 0 could not be reached in time (message names the address and what to check).</exception>
    /// <exception cref="IOException">rank 0 could not listen on the port (e.g. it is in use).</exception>
    public static TcpStore Connect(ProcessGroupOptions options)
    {
        options.Validate();
        TcpStoreServer? server = null;
        int port = options.MasterPort;
        if (options.Rank == 0)
        {
            server = TcpStoreServer.Start(options);
            port = server.Port;
        }
        try
        {
            var client = ConnectWithRetries(options, port);
            var store = new TcpStore(options, server, client, port);
            store.Call(w => { w.Write((byte)Op.Hello); w.Write(options.Rank); }, "joining the rendezvous", r => r.ReadByte());
            return store;
        }
        catch { server?.Dispose(); throw; }
    }

    static TcpClient ConnectWithRetries(ProcessGroupOptions o, int port)
    {
        var deadline = DateTime.UtcNow + o.Timeout;
        var delay = TimeSpan.FromMilliseconds(50);
        Exception? last = null;
        while (true)
        {
            var client = new TcpClient { NoDelay = true };
            try
            {
                var remaining = deadline - DateTime.UtcNow;
                using var cts = new CancellationTokenSource(remaining < TimeSpan.FromSeconds(5) ? (remaining > TimeSpan.Zero ? remaining : TimeSpan.FromMilliseconds(1)) : TimeSpan.FromSeconds(5));
                client.ConnectAsync(o.MasterAddr, port, cts.Token).AsTask().GetAwaiter().GetResult();
                return client;
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or IOException)
            {
                client.Dispose();
                last = e;
            }
            if (DateTime.UtcNow + delay > deadline)
                throw new TimeoutException(
                    $"Rank {o.Rank} could not reach the rendezvous store at {o.MasterAddr}:{port} within {o.Timeout.TotalSeconds:0.#} s. " +
                    $"Rank 0 hosts it: is rank 0 running, and do {ProcessGroupOptions.MasterAddrEnv}/{ProcessGroupOptions.MasterPortEnv} name its host and port on every rank? Last error: {last?.Message}");
            Thread.Sleep(delay);
            delay = TimeSpan.FromMilliseconds(Math.Min(1000, delay.TotalMilliseconds * 2));
        }
    }

    /// <summary>Stores <paramref name="value"/> under <paramref name="key"/> (overwrites) and wakes ranks waiting for it.</summary>
    public void Set(string key, byte[] value)
        => Call(w => { w.Write((byte)Op.Set); w.Write(key); w.Write(value.Length); w.Write(value); }, $"setting '{key}'", r => r.ReadByte());

    /// <summary>Returns the value under <paramref name="key"/>, waiting (bounded by the timeout) until some rank sets it.</summary>
    /// <exception cref="TimeoutException">the key was not set in time.</exception>
    public byte[] Get(string key, TimeSpan? timeout = null)
    {
        Wait(new[] { key }, timeout, $"value '{key}'");
        return Call(w => { w.Write((byte)Op.Get); w.Write(key); }, $"reading '{key}'", r => r.ReadBytes(r.ReadInt32()));
    }

    /// <summary>True when <paramref name="key"/> has been set (does not wait).</summary>
    public bool Check(string key)
        => Call(w => { w.Write((byte)Op.Check); w.Write(key); }, $"checking '{key}'", r => r.ReadBoolean());

    /// <summary>
    /// Waits until every key in <paramref name="keys"/> is set. Ends early with an error when any rank's connection dropped
    /// (that rank died), and with a <see cref="TimeoutException"/> listing the missing keys at the timeout.
    /// </summary>
    public void Wait(IReadOnlyList<string> keys, TimeSpan? timeout = null, string? what = null)
    {
        var t = timeout ?? _options.Timeout;
        var reply = Call(w =>
        {
            w.Write((byte)Op.Wait); w.Write((long)t.TotalMilliseconds); w.Write(keys.Count);
            foreach (var k in keys) w.Write(k);
        }, what ?? "waiting", WaitReply.Read, t + TimeSpan.FromSeconds(30));
        if (reply.Status == WaitStatus.Ok) return;
        throw reply.ToException(_options, what ?? $"keys {string.Join(", ", keys)}", t);
    }

    /// <summary>
    /// Blocks until every rank has called <see cref="Barrier"/> with the same <paramref name="name"/> the same number of times.
    /// On timeout the error names the ranks that did not arrive (and those that never connected or dropped).
    /// </summary>
    public void Barrier(string name = "barrier", TimeSpan? timeout = null)
    {
        int gen;
        lock (_barrierGenerations) { _barrierGenerations.TryGetValue(name, out gen); _barrierGenerations[name] = gen + 1; }
        var prefix = $"__barrier/{name}/{gen}/";
        Set(prefix + Rank, Array.Empty<byte>());
        var keys = Enumerable.Range(0, WorldSize).Select(r => prefix + r).ToArray();
        Wait(keys, timeout, $"barrier '{name}' #{gen}");
    }

    T Call<T>(Action<BinaryWriter> request, string what, Func<BinaryReader, T> readReply, TimeSpan? readTimeout = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_io)
        {
            try
            {
                _client.ReceiveTimeout = (int)Math.Min(int.MaxValue, (readTimeout ?? _options.Timeout + TimeSpan.FromSeconds(30)).TotalMilliseconds);
                request(_writer); _writer.Flush();
                return readReply(_reader);
            }
            catch (Exception e) when (e is IOException or SocketException or EndOfStreamException or ObjectDisposedException)
            {
                throw new IOException(
                    $"Rank {Rank} lost its connection to the rendezvous store on rank 0 ({_options.MasterAddr}:{Port}) while {what}: " +
                    $"rank 0 has probably ended or failed (see its log). Inner error: {e.Message}", e);
            }
        }
    }

    /// <summary>Leaves the rendezvous cleanly (so other ranks do not report this one as dead) and, on rank 0, stops the server.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        try { lock (_io) { _writer.Write((byte)Op.Bye); _writer.Flush(); } } catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { }
        _disposed = true;
        _client.Dispose();
        _server?.Dispose();
    }

    /// <summary>Drops the connection without saying goodbye, as a crashed process would (tests use this to simulate a dead rank).</summary>
    internal void Abandon()
    {
        _disposed = true;
        _client.Client.Close(0);
        _client.Dispose();
        _server?.Dispose();
    }

    internal enum Op : byte { Hello = 1, Set = 2, Get = 3, Check = 4, Wait = 5, Bye = 6 }
    internal enum WaitStatus : byte { Ok = 0, Timeout = 1, RankLeft = 2 }

    internal sealed record WaitReply(WaitStatus Status, string[] Missing, int[] Connected, int[] Departed)
    {
        public void Write(BinaryWriter w)
        {
            w.Write((byte)Status);
            w.Write(Missing.Length); foreach (var m in Missing) w.Write(m);
            w.Write(Connected.Length); foreach (var c in Connected) w.Write(c);
            w.Write(Departed.Length); foreach (var d in Departed) w.Write(d);
        }

        public static WaitReply Read(BinaryReader r)
        {
            var s = (WaitStatus)r.ReadByte();
            var missing = new string[r.ReadInt32()]; for (int i = 0; i < missing.Length; i++) missing[i] = r.ReadString();
            var conn = new int[r.ReadInt32()]; for (int i = 0; i < conn.Length; i++) conn[i] = r.ReadInt32();
            var dep = new int[r.ReadInt32()]; for (int i = 0; i < dep.Length; i++) dep[i] = r.ReadInt32();
            return new WaitReply(s, missing, conn, dep);
        }

        public Exception ToException(ProcessGroupOptions o, string what, TimeSpan timeout)
        {
            // Barrier keys end in "/<rank>": report ranks, not keys.
            var missingRanks = Missing.Select(k => int.TryParse(k[(k.LastIndexOf('/') + 1)..], out var r) && k.StartsWith("__barrier/") ? r : -1).ToArray();
            var who = missingRanks.All(r => r >= 0)
                ? $"rank(s) {string.Join(", ", missingRanks)} did not arrive"
                : $"key(s) {string.Join(", ", Missing)} were never set";
            var never = Enumerable.Range(0, o.WorldSize).Except(Connected).Except(Departed).ToArray();
            var neverText = never.Length > 0 ? $"; rank(s) {string.Join(", ", never)} never connected to the rendezvous at {o.MasterAddr}:{o.MasterPort}" : "";
            if (Status == WaitStatus.RankLeft)
                return new IOException($"Rank {o.Rank}: {what} cannot complete: rank(s) {string.Join(", ", Departed)} disconnected without leaving " +
                                       $"(crashed or killed; see that rank's log); {who}{neverText}. Ending this rank instead of waiting.");
            var departedText = Departed.Length > 0 ? $"; rank(s) {string.Join(", ", Departed)} disconnected without leaving (crashed or killed)" : "";
            return new TimeoutException($"Rank {o.Rank}: {what} timed out after {timeout.TotalSeconds:0.#} s: {who}{departedText}{neverText}.");
        }
    }
}

/// <summary>
/// The rank-0 side of <see cref="TcpStore"/>: an in-memory dictionary served to one connection per rank, each on its own
/// background thread (a handful of ranks per host; no thread-pool threads are blocked).
/// </summary>
sealed class TcpStoreServer : IDisposable
{
    readonly TcpListener _listener;
    volatile bool _stopped;
    readonly object _gate = new();
    readonly Dictionary<string, byte[]> _data = new();
    readonly HashSet<int> _connected = new(), _departed = new();
    readonly List<TcpClient> _clients = new();

    TcpStoreServer(TcpListener listener) => _listener = listener;

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public static TcpStoreServer Start(ProcessGroupOptions o)
    {
        var bind = IsLoopback(o.MasterAddr) ? IPAddress.Loopback : IPAddress.Any;
        var listener = new TcpListener(bind, o.MasterPort);
        try { listener.Start(o.WorldSize * 2 + 8); }
        catch (SocketException e)
        {
            throw new IOException($"Rank 0 could not listen on {bind}:{o.MasterPort} for the rendezvous store ({e.SocketErrorCode}: {e.Message}). " +
                                  $"Pick a free {ProcessGroupOptions.MasterPortEnv}.", e);
        }
        var server = new TcpStoreServer(listener);
        new Thread(server.AcceptLoop) { IsBackground = true, Name = "quanta-store-accept" }.Start();
        return server;
    }

    static bool IsLoopback(string host)
    {
        if (host == "localhost") return true;
        return IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip);
    }

    void AcceptLoop()
    {
        while (!_stopped)
        {
            TcpClient c;
            try { c = _listener.AcceptTcpClient(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException) { return; }
            c.NoDelay = true;
            lock (_gate)
            {
                if (_stopped) { c.Dispose(); return; }
                _clients.Add(c);
            }
            new Thread(() => Serve(c)) { IsBackground = true, Name = "quanta-store-conn" }.Start();
        }
    }

    void Serve(TcpClient client)
    {
        int rank = -1; bool clean = false;
        try
        {
            using var stream = client.GetStream();
            using var r = new BinaryReader(stream); using var w = new BinaryWriter(stream);
            while (!_stopped)
            {
                var op = (TcpStore.Op)r.ReadByte();
                switch (op)
                {
                    case TcpStore.Op.Hello:
                        rank = r.ReadInt32();
                        lock (_gate) { _connected.Add(rank); _departed.Remove(rank); Monitor.PulseAll(_gate); }
                        w.Write((byte)0); break;
                    case TcpStore.Op.Set:
                    {
                        var key = r.ReadString(); var value = r.ReadBytes(r.ReadInt32());
                        lock (_gate) { _data[key] = value; Monitor.PulseAll(_gate); }
                        w.Write((byte)0); break;
                    }
                    case TcpStore.Op.Get:
                    {
                        var key = r.ReadString(); byte[] v;
                        lock (_gate) v = _data.TryGetValue(key, out var x) ? x : Array.Empty<byte>();
                        w.Write(v.Length); w.Write(v); break;
                    }
                    case TcpStore.Op.Check:
                    {
                        var key = r.ReadString(); bool has;
                        lock (_gate) has = _data.ContainsKey(key);
                        w.Write(has); break;
                    }
                    case TcpStore.Op.Wait:
                    {
                        var timeout = TimeSpan.FromMilliseconds(r.ReadInt64());
                        var keys = new string[r.ReadInt32()]; for (int i = 0; i < keys.Length; i++) keys[i] = r.ReadString();
                        WaitFor(keys, timeout).Write(w);
                        break;
                    }
                    case TcpStore.Op.Bye:
                        clean = true; return;
                    default:
                        return; // protocol error: drop the connection
                }
                w.Flush();
            }
        }
        catch (Exception e) when (e is IOException or EndOfStreamException or ObjectDisposedException or SocketException) { }
        finally
        {
            lock (_gate)
            {
                if (rank >= 0) { _connected.Remove(rank); if (!clean) _departed.Add(rank); }
                _clients.Remove(client);
                Monitor.PulseAll(_gate);
            }
            client.Dispose();
        }
    }

    /// <summary>Blocks until all keys exist (Ok), a rank has dropped (RankLeft) or the timeout passes (Timeout).</summary>
    TcpStore.WaitReply WaitFor(string[] keys, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (_gate)
        {
            while (true)
            {
                var missing = keys.Where(k => !_data.ContainsKey(k)).ToArray();
                var status = missing.Length == 0 ? TcpStore.WaitStatus.Ok
                           : _departed.Count > 0 ? TcpStore.WaitStatus.RankLeft
                           : DateTime.UtcNow >= deadline || _stopped ? TcpStore.WaitStatus.Timeout
                           : (TcpStore.WaitStatus?)null;
                if (status is { } s) return new(s, missing, _connected.Order().ToArray(), _departed.Order().ToArray());
                var remaining = deadline - DateTime.UtcNow;
                if (remaining > TimeSpan.Zero) Monitor.Wait(_gate, remaining);
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_stopped) return;
            _stopped = true;
            foreach (var c in _clients) c.Dispose();
            _clients.Clear();
            Monitor.PulseAll(_gate);
        }
        _listener.Stop();
    }
}
