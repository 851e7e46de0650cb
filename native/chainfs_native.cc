// The few syscalls Node's fs lacks. Each function is a thin, synchronous
// wrapper: arguments are checked, errors come back as JS exceptions carrying
// `code` (e.g. "EBADF") and `syscall`, like Node's own fs errors.
#include <napi.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/fs.h>

#include <memory>
#include <atomic>
#include <functional>
#include <mutex>

namespace {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  const char* code = "EIO";
  switch (err) {
    case EBADF: code = "EBADF"; break;
    case EINVAL: code = "EINVAL"; break;
    case ENXIO: code = "ENXIO"; break;
    case EIO: code = "EIO"; break;
    case ENOSPC: code = "ENOSPC"; break;
    case EOPNOTSUPP: code = "EOPNOTSUPP"; break;
    case EXDEV: code = "EXDEV"; break;
    case EFBIG: code = "EFBIG"; break;
    case EISDIR: code = "EISDIR"; break;
    case EPERM: code = "EPERM"; break;
    case EACCES: code = "EACCES"; break;
    case EAGAIN: code = "EAGAIN"; break;
    case ENOSYS: code = "ENOSYS"; break;
    case EOVERFLOW: code = "EOVERFLOW"; break;
    case ESPIPE: code = "ESPIPE"; break;
    case EPIPE: code = "EPIPE"; break;
    case EDQUOT: code = "EDQUOT"; break;
    case ENOMEM: code = "ENOMEM"; break;
    case ENODEV: code = "ENODEV"; break;
    case ECANCELED: code = "ECANCELED"; break;
    default: break;
  }
  e.Set("code", Napi::String::New(env, code));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

Napi::Value Throw(Napi::Env env, int err, const char* syscall) {
  ErrnoError(env, err, syscall).ThrowAsJavaScriptException();
  return env.Undefined();
}

bool Args(const Napi::CallbackInfo& info, size_t n) {
  if (info.Length() < n) {
    Napi::TypeError::New(info.Env(), "wrong number of arguments").ThrowAsJavaScriptException();
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!info[i].IsNumber() && !info[i].IsBuffer()) {
      Napi::TypeError::New(info.Env(), "bad argument").ThrowAsJavaScriptException();
      return false;
    }
  }
  return true;
}

int64_t I64(const Napi::Value& v) { return v.As<Napi::Number>().Int64Value(); }

// lseek(fd, offset, whence) for SEEK_DATA / SEEK_HOLE; ENXIO (no more data,
// or offset past EOF) is returned as -1 instead of thrown.
Napi::Value Seek(const Napi::CallbackInfo& info, int whence, const char* name) {
  if (!Args(info, 2)) return info.Env().Undefined();
  off_t r = lseek(static_cast<int>(I64(info[0])), static_cast<off_t>(I64(info[1])), whence);
  if (r < 0) {
    if (errno == ENXIO) return Napi::Number::New(info.Env(), -1);
    return Throw(info.Env(), errno, name);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

Napi::Value SeekData(const Napi::CallbackInfo& info) { return Seek(info, SEEK_DATA, "lseek(SEEK_DATA)"); }
Napi::Value SeekHole(const Napi::CallbackInfo& info) { return Seek(info, SEEK_HOLE, "lseek(SEEK_HOLE)"); }

// copyFileRange(fdIn, offIn, fdOut, offOut, len) -> bytes copied (may be short; 0 at EOF).
Napi::Value CopyFileRange(const Napi::CallbackInfo& info) {
  if (!Args(info, 5)) return info.Env().Undefined();
  loff_t in = I64(info[1]);
  loff_t out = I64(info[3]);
  ssize_t r;
  do {
    r = copy_file_range(static_cast<int>(I64(info[0])), &in, static_cast<int>(I64(info[2])), &out,
                        static_cast<size_t>(I64(info[4])), 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Throw(info.Env(), errno, "copy_file_range");
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

// punchHole(fd, offset, len): deallocate, keeping the file size.
Napi::Value PunchHole(const Napi::CallbackInfo& info) {
  if (!Args(info, 3)) return info.Env().Undefined();
  if (fallocate(static_cast<int>(I64(info[0])), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                static_cast<off_t>(I64(info[1])), static_cast<off_t>(I64(info[2]))) < 0)
    return Throw(info.Env(), errno, "fallocate(PUNCH_HOLE)");
  return info.Env().Undefined();
}

// preadNoWait(fd, buf, bufOffset, length, position) -> bytes read, or -1 when
// the data is not in the page cache (RWF_NOWAIT would block). Lets a caller
// serve cached data synchronously and send only cold reads elsewhere.
Napi::Value PreadNoWait(const Napi::CallbackInfo& info) {
  if (info.Length() < 5 || !info[1].IsBuffer()) {
    Napi::TypeError::New(info.Env(), "bad arguments").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  int64_t off = I64(info[2]);
  int64_t len = I64(info[3]);
  if (off < 0 || len < 0 || static_cast<uint64_t>(off + len) > buf.Length()) {
    Napi::RangeError::New(info.Env(), "buffer range out of bounds").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  struct iovec iov = {buf.Data() + off, static_cast<size_t>(len)};
  ssize_t r;
  do {
    r = preadv2(static_cast<int>(I64(info[0])), &iov, 1, static_cast<off_t>(I64(info[4])), RWF_NOWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EOPNOTSUPP) return Napi::Number::New(info.Env(), -1);
    return Throw(info.Env(), errno, "preadv2");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

// setPipeSize(fd, bytes) -> the new pipe capacity, or -1 if fd is not a pipe
// or the size is not allowed (F_SETPIPE_SZ; unprivileged users are capped
// at /proc/sys/fs/pipe-max-size). Bigger pipes mean fewer wakeups when
// streaming an image to another process.
Napi::Value SetPipeSize(const Napi::CallbackInfo& info) {
  if (!Args(info, 2)) return info.Env().Undefined();
  int r = fcntl(static_cast<int>(I64(info[0])), F_SETPIPE_SZ, static_cast<int>(I64(info[1])));
  return Napi::Number::New(info.Env(), r < 0 ? -1 : r);
}

// tryLock(fd) -> true if flock(LOCK_EX | LOCK_NB) took the lock, false if
// another open file description holds it; throws on any other error. The
// kernel drops the lock when the holder's last descriptor closes (or it dies).
Napi::Value TryLock(const Napi::CallbackInfo& info) {
  if (!Args(info, 1)) return info.Env().Undefined();
  int r;
  do r = flock(static_cast<int>(I64(info[0])), LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EWOULDBLOCK) return Throw(info.Env(), errno, "flock");
  return Napi::Boolean::New(info.Env(), r == 0);
}

// A system call on the libuv pool, settled as a promise: resolved, or
// rejected with its errno (`code`, as Throw words it). `call` returns 0 or
// an errno; `advisory` calls never reject.
class PoolCall : public Napi::AsyncWorker {
 public:
  PoolCall(Napi::Env env, const char* syscall, bool advisory, std::function<int()> call)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), syscall_(syscall),
        advisory_(advisory), call_(std::move(call)) {}
  static Napi::Promise Queue(Napi::Env env, const char* syscall, bool advisory, std::function<int()> call) {
    auto* job = new PoolCall(env, syscall, advisory, std::move(call));
    Napi::Promise p = job->deferred_.Promise();
    job->AsyncWorker::Queue();
    return p;
  }
  void Execute() override { err_ = call_(); }
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    Napi::HandleScope scope(env);
    int err = status == napi_cancelled ? ECANCELED : err_;
    if (err && !advisory_) deferred_.Reject(ErrnoError(env, err, syscall_).Value());
    else deferred_.Resolve(env.Undefined());
    delete this;
  }

 private:
  Napi::Promise::Deferred deferred_;
  const char* syscall_;
  bool advisory_;
  std::function<int()> call_;
  int err_ = 0;
};

// startWritebackAsync(fd) -> Promise<void>: sync_file_range(fd, 0, 0,
// SYNC_FILE_RANGE_WRITE) on the pool -- start writing the file's dirty pages
// to disk without waiting for them, so that a writer's final fsync overlaps
// its copying instead of following it. On the pool because submitting the
// pages is itself a few milliseconds per call (the block queue may be full),
// which the writer's planning thread should not wait.
Napi::Value StartWritebackAsync(const Napi::CallbackInfo& info) {
  if (!Args(info, 1)) return info.Env().Undefined();
  int fd = static_cast<int>(I64(info[0]));
  return PoolCall::Queue(info.Env(), "sync_file_range", false,
                         [fd] { return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 ? errno : 0; });
}

// willNeedAsync(fd, offset, length) -> Promise<void>: posix_fadvise(
// WILLNEED) on the pool -- the kernel starts reading the range into the page
// cache and returns; a writer announces the runs it will copy next so that
// the disk reads them while it copies the present ones (a mapping's
// MAP_POPULATE otherwise reads one batch at a time, synchronously).
// Advisory: never rejects.
Napi::Value WillNeedAsync(const Napi::CallbackInfo& info) {
  if (!Args(info, 3)) return info.Env().Undefined();
  int fd = static_cast<int>(I64(info[0]));
  int64_t off = I64(info[1]), len = I64(info[2]);
  return PoolCall::Queue(info.Env(), "posix_fadvise", true,
                         [fd, off, len] { return posix_fadvise(fd, off, len, POSIX_FADV_WILLNEED); });
}

// Waits until fd takes more bytes (stdout may be a non-blocking pipe: Node
// makes its pipes so); false with errno set if poll fails.
bool WaitWritable(int fd) {
  struct pollfd p = {fd, POLLOUT, 0};
  while (poll(&p, 1, -1) < 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

// sendFile(outFd, inFd, position, length) -> bytes sent (short only at the
// end of the input; 0 there): sendfile(2), the kernel moving page-cache
// pages to outFd without a copy through the process (a pipe gets references
// to them; /dev/null discards them). Waits while outFd is a full
// non-blocking pipe.
Napi::Value SendFile(const Napi::CallbackInfo& info) {
  if (!Args(info, 4)) return info.Env().Undefined();
  int out = static_cast<int>(I64(info[0]));
  int in = static_cast<int>(I64(info[1]));
  off_t pos = static_cast<off_t>(I64(info[2]));
  int64_t left = I64(info[3]);
  int64_t done = 0;
  while (left > 0) {
    ssize_t r = sendfile(out, in, &pos, static_cast<size_t>(left < (1 << 30) ? left : (1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) {
      if (!WaitWritable(out)) return Throw(info.Env(), errno, "poll");
      continue;
    }
    if (r < 0) return Throw(info.Env(), errno, "sendfile");
    if (r == 0) break;
    done += r;
    left -= r;
  }
  return Napi::Number::New(info.Env(), static_cast<double>(done));
}

// writeAll(fd, buf, offset, length): every byte written, waiting while fd
// is a full non-blocking pipe (fs.writeSync would throw EAGAIN there).
Napi::Value WriteAll(const Napi::CallbackInfo& info) {
  if (!Args(info, 4) || !info[1].IsBuffer()) return info.Env().Undefined();
  int fd = static_cast<int>(I64(info[0]));
  Napi::Buffer<char> buf = info[1].As<Napi::Buffer<char>>();
  int64_t off = I64(info[2]);
  int64_t len = I64(info[3]);
  if (off < 0 || len < 0 || static_cast<uint64_t>(off + len) > buf.Length()) {
    Napi::RangeError::New(info.Env(), "range outside the buffer").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const char* at = buf.Data() + off;
  while (len > 0) {
    ssize_t r = write(fd, at, static_cast<size_t>(len));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) {
      if (!WaitWritable(fd)) return Throw(info.Env(), errno, "poll");
      continue;
    }
    if (r < 0) return Throw(info.Env(), errno, "write");
    at += r;
    len -= r;
  }
  return info.Env().Undefined();
}

// Writes into one output file take turns: the file system holds the inode's
// lock for each write anyway, and several pool threads writing one file at
// once spin on it (rwsem_spin_on_owner: a tenth of an export's CPU on two
// cores) instead of leaving the core to the planner and to writeback.
// Threads waiting here sleep. Keyed by the output's descriptor.
std::mutex& OutputLock(int fd) {
  static std::mutex locks[16];
  return locks[static_cast<unsigned>(fd) % 16];
}

// copy_file_range of [offIn, offIn+len) to offOut, on the libuv pool: the
// kernel copies page cache to page cache, once, without a trip through user
// space. Where the kernel cannot (files on different file systems, a block
// device), the same range goes through a buffer (pread/pwrite) on the same
// thread. Stops early only at the input's end.
class CopyRangeWorker : public Napi::AsyncWorker {
 public:
  CopyRangeWorker(Napi::Env env, int in, int64_t offIn, int out, int64_t offOut, int64_t len)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
        in_(in), out_(out), offIn_(offIn), offOut_(offOut), len_(len) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    std::lock_guard<std::mutex> turn(OutputLock(out_));
    bool viaBuffer = false;
    while (done_ < len_) {
      size_t step = static_cast<size_t>(len_ - done_ < (1 << 30) ? len_ - done_ : (1 << 30));
      ssize_t r;
      if (!viaBuffer) {
        loff_t in = offIn_ + done_, out = offOut_ + done_;
        r = copy_file_range(in_, &in, out_, &out, step, 0);
        if (r < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS) ) {
          viaBuffer = true;
          continue;
        }
      } else {
        r = CopyBuffered(step);
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) { err_ = errno; return; }
      if (r == 0) return;  // the input's end: the rest stays a hole (zeros)
      done_ += r;
    }
  }
  // AsyncWorker's OnOK/OnError split cannot carry an errno code: settle here.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    Napi::HandleScope scope(env);
    if (status == napi_cancelled) deferred_.Reject(ErrnoError(env, ECANCELED, "copy_file_range").Value());
    else if (err_) deferred_.Reject(ErrnoError(env, err_, syscall_).Value());
    else deferred_.Resolve(Napi::Number::New(env, static_cast<double>(done_)));
    delete this;
  }

 private:
  // One pread (up to 1 MiB) and the pwrite of what it read; -1 with errno set.
  ssize_t CopyBuffered(size_t step) {
    if (!buf_) buf_.reset(static_cast<char*>(malloc(kBuf)));
    if (!buf_) { errno = ENOMEM; syscall_ = "malloc"; return -1; }
    size_t n = step < kBuf ? step : kBuf;
    ssize_t r = pread(in_, buf_.get(), n, offIn_ + done_);
    if (r <= 0) { syscall_ = "pread"; return r; }
    for (ssize_t w = 0; w < r;) {
      ssize_t k = pwrite(out_, buf_.get() + w, r - w, offOut_ + done_ + w);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) { syscall_ = "pwrite"; return -1; }
      w += k;
    }
    return r;
  }
  struct Free { void operator()(char* p) const { free(p); } };
  static constexpr size_t kBuf = 1 << 20;
  Napi::Promise::Deferred deferred_;
  int in_, out_;
  int64_t offIn_, offOut_, len_, done_ = 0;
  int err_ = 0;
  const char* syscall_ = "copy_file_range";
  std::unique_ptr<char, Free> buf_;
};

// copyFileRangeAsync(fdIn, offIn, fdOut, offOut, len) -> Promise<bytes copied>.
Napi::Value CopyFileRangeAsync(const Napi::CallbackInfo& info) {
  if (!Args(info, 5)) return info.Env().Undefined();
  auto* job = new CopyRangeWorker(info.Env(), static_cast<int>(I64(info[0])), I64(info[1]),
                               static_cast<int>(I64(info[2])), I64(info[3]), I64(info[4]));
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
}

// A SIGBUS while scanning a mapping (the file was cut short meanwhile) jumps
// back to the scan, which reports EIO; any other SIGBUS gets the default.
// volatile: the scan calls nothing the compiler cannot see into, so a plain
// store of the jump buffer before it and of nullptr after it would be one
// dead store, and the handler would find nullptr (it did: a Bus error).
thread_local sigjmp_buf* volatile scanJump = nullptr;
struct sigaction previousBus;

void OnBus(int sig, siginfo_t* si, void* ctx) {
  if (scanJump) siglongjmp(*scanJump, 1);
  if (previousBus.sa_flags & SA_SIGINFO) {
    if (previousBus.sa_sigaction) { previousBus.sa_sigaction(sig, si, ctx); return; }
  } else if (previousBus.sa_handler != SIG_DFL && previousBus.sa_handler != SIG_IGN) {
    previousBus.sa_handler(sig);
    return;
  }
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

bool AllZero(const uint8_t* p, size_t n) {
  // Real data almost always differs in its first bytes: look there before the full pass.
  size_t head = n < 64 ? n : 64;
  for (size_t i = 0; i < head; i++) if (p[i]) return false;
  if (n <= head) return true;
  return p[head] == 0 && memcmp(p + head, p + head + 1, n - head - 1) == 0;
}

// A read-only, populated mapping of part of a layer file: scanned for zeros
// and written to the output from, so the bytes are copied once (page cache
// to page cache, by pwrite) and never read into a buffer of ours. Unmapped
// once released and no write from it is in flight (or when collected).
struct Mapping {
  void* base = nullptr;
  size_t mapLen = 0;
  const uint8_t* data = nullptr;  // the byte at the position asked
  int64_t len = 0;                // bytes mapped from there (clipped to the file's end)
  int inflight = 0;
  bool released = false;
  void Unmap() {
    if (base) munmap(base, mapLen);
    base = nullptr;
  }
};

Mapping* MappingOf(const Napi::Value& v) { return v.As<Napi::External<Mapping>>().Data(); }

bool InstallBusHandler(Napi::Env env) {
  static bool installed = false;
  if (installed) return true;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnBus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &previousBus) < 0) {
    Throw(env, errno, "sigaction");
    return false;
  }
  installed = true;
  return true;
}

// mapRange(fd, position, length) -> mapping: the file's [position,
// position+length) mapped read-only and populated (MAP_POPULATE: the page
// cache's pages are mapped in one pass, not faulted in one by one), clipped
// to the file's (or block device's) current end. Other kinds of file throw
// ENODEV.
Napi::Value MapRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Args(info, 3)) return env.Undefined();
  int fd = static_cast<int>(I64(info[0]));
  int64_t pos = I64(info[1]), len = I64(info[2]);
  if (pos < 0 || len < 0) {
    Napi::RangeError::New(env, "bad range").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!InstallBusHandler(env)) return env.Undefined();
  struct stat st;
  if (fstat(fd, &st) < 0) return Throw(env, errno, "fstat");
  int64_t size = st.st_size;
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;  // a block device's st_size is 0: ask the device
    if (ioctl(fd, BLKGETSIZE64, &bytes) < 0) return Throw(env, errno, "ioctl(BLKGETSIZE64)");
    size = static_cast<int64_t>(bytes);
  } else if (!S_ISREG(st.st_mode)) {
    return Throw(env, ENODEV, "mmap");  // nothing else is mapped: the caller reads instead
  }
  auto* m = new Mapping();
  int64_t end = pos + len < size ? pos + len : size;
  if (end > pos) {
    int64_t page = sysconf(_SC_PAGESIZE);
    int64_t base = pos - pos % page;
    m->mapLen = static_cast<size_t>(end - base);
    void* p = mmap(nullptr, m->mapLen, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, base);
    if (p == MAP_FAILED) {
      int err = errno;
      delete m;
      return Throw(env, err, "mmap");
    }
    m->base = p;
    m->data = static_cast<const uint8_t*>(p) + (pos - base);
    m->len = end - pos;
  }
  return Napi::External<Mapping>::New(env, m, [](Napi::Env, Mapping* m) {
    m->Unmap();
    delete m;
  });
}

// nonZeroMapped(mapping, offset, length, phase, granule, out) -> segments:
// sets out[k] = 1 where segment k of the mapping's [offset, offset+length)
// holds a non-zero byte (other entries are left as they are). Segments end
// where phase + (bytes from offset) is a multiple of granule. Bytes past
// what is mapped count as zeros. A file cut short meanwhile throws EIO.
Napi::Value NonZeroMapped(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsExternal() || !info[5].IsTypedArray()) {
    Napi::TypeError::New(env, "bad arguments").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Mapping* m = MappingOf(info[0]);
  int64_t off = I64(info[1]), len = I64(info[2]), phase = I64(info[3]), granule = I64(info[4]);
  Napi::Uint8Array out = info[5].As<Napi::Uint8Array>();
  if (off < 0 || len < 0 || granule <= 0 || phase < 0) {
    Napi::RangeError::New(env, "bad range").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t firstLen = granule - (phase % granule);
  int64_t segments = len == 0 ? 0 : 1 + (len > firstLen ? (len - firstLen + granule - 1) / granule : 0);
  if (static_cast<uint64_t>(segments) > out.ElementLength()) {
    Napi::RangeError::New(env, "out is too short").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t stop = off + len < m->len ? len : m->len - off;
  if (stop <= 0 || !m->base) return Napi::Number::New(env, static_cast<double>(segments));
  const uint8_t* data = m->data + off;
  uint8_t* o = out.Data();
  sigjmp_buf jump;
  bool faulted = false;
  if (sigsetjmp(jump, 1) == 0) {
    scanJump = &jump;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the handler sees it before the first read
    int64_t at = 0, seg = 0;
    while (at < stop) {
      int64_t n = (seg == 0 ? firstLen : granule);
      if (at + n > stop) n = stop - at;
      if (!o[seg] && !AllZero(data + at, static_cast<size_t>(n))) o[seg] = 1;
      at += n;
      seg++;
    }
  } else {
    faulted = true;
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  scanJump = nullptr;
  if (faulted) return Throw(env, EIO, "mmap read (file cut short)");
  return Napi::Number::New(env, static_cast<double>(segments));
}

// pwrite of a mapping's [offset, offset+length) at outPos, on the libuv
// pool. Bytes past what is mapped are not written (the output's hole there
// reads as the zeros a layer reads past its end).
class WriteMappedWorker : public Napi::AsyncWorker {
 public:
  WriteMappedWorker(Napi::Env env, Napi::External<Mapping> ext, int64_t off, int64_t len, int out, int64_t outPos)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), ref_(Napi::Persistent(ext)),
        m_(ext.Data()), off_(off), len_(len), out_(out), outPos_(outPos) {
    m_->inflight++;
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int64_t stop = off_ + len_ < m_->len ? off_ + len_ : m_->len;
    const char* p = reinterpret_cast<const char*>(m_->data);
    std::lock_guard<std::mutex> turn(OutputLock(out_));
    for (int64_t at = off_; at < stop;) {
      ssize_t r = pwrite(out_, p + at, static_cast<size_t>(stop - at), outPos_ + (at - off_));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) { err_ = errno; return; }  // EFAULT: the file was cut short under the mapping
      at += r;
    }
  }

  void OnWorkComplete(Napi::Env env, napi_status status) override {
    Napi::HandleScope scope(env);
    if (--m_->inflight == 0 && m_->released) m_->Unmap();
    if (status == napi_cancelled) deferred_.Reject(ErrnoError(env, ECANCELED, "pwrite").Value());
    else if (err_) deferred_.Reject(ErrnoError(env, err_, "pwrite").Value());
    else deferred_.Resolve(env.Undefined());
    ref_.Reset();
    delete this;
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::External<Mapping>> ref_;  // keeps the mapping from being collected meanwhile
  Mapping* m_;
  int64_t off_, len_;
  int out_;
  int64_t outPos_;
  int err_ = 0;
};

// writeMappedAsync(mapping, offset, length, outFd, outPos) -> Promise<void>.
Napi::Value WriteMappedAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsExternal()) {
    Napi::TypeError::New(env, "bad arguments").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto ext = info[0].As<Napi::External<Mapping>>();
  auto* job = new WriteMappedWorker(env, ext, I64(info[1]), I64(info[2]), static_cast<int>(I64(info[3])), I64(info[4]));
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
}

// releaseMapping(mapping): unmaps it now, or when its last write is done.
Napi::Value ReleaseMapping(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "bad arguments").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Mapping* m = MappingOf(info[0]);
  m->released = true;
  if (m->inflight == 0) m->Unmap();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("copyFileRangeAsync", Napi::Function::New(env, CopyFileRangeAsync));
  exports.Set("mapRange", Napi::Function::New(env, MapRange));
  exports.Set("nonZeroMapped", Napi::Function::New(env, NonZeroMapped));
  exports.Set("writeMappedAsync", Napi::Function::New(env, WriteMappedAsync));
  exports.Set("releaseMapping", Napi::Function::New(env, ReleaseMapping));
  exports.Set("sendFile", Napi::Function::New(env, SendFile));
  exports.Set("writeAll", Napi::Function::New(env, WriteAll));
  exports.Set("seekData", Napi::Function::New(env, SeekData));
  exports.Set("seekHole", Napi::Function::New(env, SeekHole));
  exports.Set("copyFileRange", Napi::Function::New(env, CopyFileRange));
  exports.Set("punchHole", Napi::Function::New(env, PunchHole));
  exports.Set("preadNoWait", Napi::Function::New(env, PreadNoWait));
  exports.Set("setPipeSize", Napi::Function::New(env, SetPipeSize));
  exports.Set("tryLock", Napi::Function::New(env, TryLock));
  exports.Set("startWritebackAsync", Napi::Function::New(env, StartWritebackAsync));
  exports.Set("willNeedAsync", Napi::Function::New(env, WillNeedAsync));
  return exports;
}

}  // namespace

NODE_API_MODULE(chainfs_native, Init)
