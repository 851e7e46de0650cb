// The mount daemon's FUSE binding: libfuse2's high-level API on its own
// threads, with the read path in C.
//
// Why not fuse-native: it hands every request to Node's main thread and
// back (uv_async + a semaphore), which caps 4 KiB O_DIRECT random reads
// below qemu-storage-daemon's. Here the tree (a few nodes, fixed at mount)
// is served from C, and a read of a view is served on the libfuse thread
// that received it, with pread straight into FUSE's buffer, as long as the
// regions it touches have been *published* by JS: each region's resolved
// runs as file pieces (fd, offset delta, file end: a chain file or raw image
// at the same offsets, a qcow2 image's standard clusters), or zeros.
// Anything else (a region not yet resolved, a compressed cluster or broken
// run, a short or failed pread, chain.json) goes to JS through a thread-safe
// function and the libfuse thread waits for the answer; JS then publishes
// what it resolved.
//
// The published runs live in a two-level table per view (chunks of 256
// regions allocated on demand) under one rwlock held only to copy a read's
// pieces out, never across I/O. Their memory is bounded by a byte budget:
// past it the whole table is dropped and refills from JS on demand.
#define FUSE_USE_VERSION 26
#include <fuse.h>
#include <napi.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr int kChunkShift = 8;  // 256 regions per chunk
constexpr uint64_t kChunkRegions = 1u << kChunkShift;
constexpr int kMaxPieces = 64;  // a 128 KiB read touching more runs goes to JS
constexpr int64_t kZero = -1;   // run fd: zeros
constexpr int64_t kSlow = -2;   // run fd: only JS can read it

enum Op { kOpen = 0, kRead = 1, kSize = 2, kExit = 3 };

struct Run {
  uint64_t off;  // view offset
  uint64_t len;
  int64_t fd;
  int64_t delta;  // file position = view offset + delta
  uint64_t fend;  // file bytes at or past it read as zeros (a layer file's size at open)
};

struct Region {
  uint32_t count;
  Run runs[1];
};

size_t RegionBytes(uint32_t count) { return sizeof(Region) + (count - 1) * sizeof(Run); }

struct Node {
  std::string path;
  int parent = -1;
  bool dir = false;
  bool view = false;
  uint32_t mode = 0;
  std::atomic<int64_t> size{0};  // -1: ask JS (chain.json, built on first use)
  std::atomic<int64_t> blocks{0};
  struct timespec mtime {};
  struct timespec ctime {};
  std::atomic<bool> stale{false};
  std::vector<Region**> chunks;  // under Fs::lock
};

// One call into JS: the libfuse thread waits on `done` for the answer.
struct Call {
  int op;
  int node;
  double pos;
  size_t len;
  char* buf;
  int64_t result;
  sem_t done;
};

struct Fs;
void CallJs(Napi::Env env, Napi::Function fn, Fs* fs, Call* call);
using Tsfn = Napi::TypedThreadSafeFunction<Fs, Call, CallJs>;

struct Fs {
  std::vector<std::unique_ptr<Node>> nodes;
  pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
  size_t bytes = 0;   // published runs, under lock
  size_t budget = 0;
  uint64_t region = 4u << 20;
  uint64_t statfsBlocks = 0;
  uint64_t files = 0;
  std::string mountPoint;
  struct fuse* fuse = nullptr;
  struct fuse_chan* chan = nullptr;
  pthread_t thread{};
  uid_t uid = getuid();  // the mounting user owns every file
  gid_t gid = getgid();
  Tsfn tsfn;
  std::atomic<bool> detached{false};
  std::atomic<int> inflight{0};
  std::atomic<uint64_t> fastReads{0};
  std::atomic<uint64_t> slowReads{0};
  std::atomic<uint64_t> flushes{0};
  Call exitCall{};
};

Fs* Self() { return static_cast<Fs*>(fuse_get_context()->private_data); }

// --- calls into JS -----------------------------------------------------------

int64_t Ask(Fs* fs, int op, int node, double pos, size_t len, char* buf) {
  Call c{};
  c.op = op;
  c.node = node;
  c.pos = pos;
  c.len = len;
  c.buf = buf;
  c.result = -EIO;
  sem_init(&c.done, 0, 0);
  if (fs->tsfn.BlockingCall(&c) != napi_ok) {
    sem_destroy(&c.done);
    return -EIO;  // JS is going away
  }
  while (sem_wait(&c.done) != 0 && errno == EINTR) {
  }
  sem_destroy(&c.done);
  return c.result;
}

// On Node's main thread: handler(op, node, pos, len, call). JS answers with
// reply(call, result[, bytes]) exactly once (src/fuse/native-fuse.ts).
void CallJs(Napi::Env env, Napi::Function fn, Fs*, Call* c) {
  if (c == nullptr) return;
  if (env == nullptr) {  // the function is being torn down
    if (c->op != kExit) {
      c->result = -EIO;
      sem_post(&c->done);
    }
    return;
  }
  fn.Call({Napi::Number::New(env, c->op), Napi::Number::New(env, c->node), Napi::Number::New(env, c->pos),
           Napi::Number::New(env, static_cast<double>(c->len)),
           c->op == kExit ? env.Undefined() : Napi::External<Call>::New(env, c).As<Napi::Value>()});
  if (env.IsExceptionPending()) env.GetAndClearPendingException();  // the JS side never throws; do not crash
}

// --- the tree --------------------------------------------------------------

int Find(Fs* fs, const char* path) {
  if (path == nullptr) return -1;
  for (size_t i = 0; i < fs->nodes.size(); i++) {
    if (fs->nodes[i]->path == path) return static_cast<int>(i);
  }
  return -1;
}

Node* At(Fs* fs, uint64_t fh) { return fh < fs->nodes.size() ? fs->nodes[fh].get() : nullptr; }

int64_t SizeOf(Fs* fs, int idx) {
  Node* n = fs->nodes[idx].get();
  int64_t size = n->size.load();
  if (size >= 0) return size;
  int64_t r = Ask(fs, kSize, idx, 0, 0, nullptr);
  if (r < 0) return r;
  n->blocks = (r + 511) / 512;
  n->size = r;
  return r;
}

int Fill(Fs* fs, int idx, struct stat* st) {
  Node* n = fs->nodes[idx].get();
  memset(st, 0, sizeof *st);
  st->st_mode = n->mode;
  st->st_uid = fs->uid;
  st->st_gid = fs->gid;
  st->st_mtim = n->mtime;
  st->st_atim = n->mtime;
  st->st_ctim = n->ctime;
  if (n->dir) {
    st->st_nlink = 2;
    st->st_size = 4096;
    return 0;
  }
  int64_t size = SizeOf(fs, idx);
  if (size < 0) return static_cast<int>(size);
  st->st_nlink = 1;
  st->st_size = size;
  st->st_blksize = 4096;
  st->st_blocks = n->blocks.load();
  return 0;
}

int OpGetattr(const char* path, struct stat* st) {
  Fs* fs = Self();
  int idx = Find(fs, path);
  return idx < 0 ? -ENOENT : Fill(fs, idx, st);
}

int OpFgetattr(const char*, struct stat* st, struct fuse_file_info* fi) {
  Fs* fs = Self();
  return At(fs, fi->fh) ? Fill(fs, static_cast<int>(fi->fh), st) : -EBADF;
}

int OpAccess(const char* path, int mask) {
  if (Find(Self(), path) < 0) return -ENOENT;
  return (mask & W_OK) ? -EROFS : 0;
}

int OpOpendir(const char* path, struct fuse_file_info* fi) {
  Fs* fs = Self();
  int idx = Find(fs, path);
  if (idx < 0) return -ENOENT;
  if (!fs->nodes[idx]->dir) return -ENOTDIR;
  fi->fh = static_cast<uint64_t>(idx);
  return 0;
}

int OpReaddir(const char*, void* buf, fuse_fill_dir_t fill, off_t, struct fuse_file_info* fi) {
  Fs* fs = Self();
  Node* d = At(fs, fi->fh);
  if (!d || !d->dir) return -EBADF;
  fill(buf, ".", nullptr, 0);
  fill(buf, "..", nullptr, 0);
  for (auto& n : fs->nodes) {
    if (n->parent >= 0 && fs->nodes[n->parent].get() == d) {
      fill(buf, n->path.c_str() + n->path.rfind('/') + 1, nullptr, 0);
    }
  }
  return 0;
}

int OpOpen(const char* path, struct fuse_file_info* fi) {
  Fs* fs = Self();
  int idx = Find(fs, path);
  if (idx < 0) return -ENOENT;
  if (fs->nodes[idx]->dir) return -EISDIR;
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return -EROFS;
  int64_t r = Ask(fs, kOpen, idx, 0, 0, nullptr);  // JS opens the view (errors belong to open)
  if (r < 0) return static_cast<int>(r);
  fi->fh = static_cast<uint64_t>(idx);
  return 0;
}

int OpStatfs(const char*, struct statvfs* st) {
  Fs* fs = Self();
  memset(st, 0, sizeof *st);
  st->f_bsize = 4096;
  st->f_frsize = 4096;
  st->f_blocks = fs->statfsBlocks;
  st->f_files = fs->files;
  st->f_namemax = 255;
  st->f_flag = ST_RDONLY;
  return 0;
}

int Refuse() { return -EROFS; }
int RefuseWrite(const char*, const char*, size_t, off_t, struct fuse_file_info*) { return Refuse(); }
int RefuseTruncate(const char*, off_t) { return Refuse(); }
int RefuseFtruncate(const char*, off_t, struct fuse_file_info*) { return Refuse(); }
int RefuseCreate(const char*, mode_t, struct fuse_file_info*) { return Refuse(); }
int RefusePath(const char*) { return Refuse(); }
int RefuseMode(const char*, mode_t) { return Refuse(); }
int RefuseTwo(const char*, const char*) { return Refuse(); }
int RefuseChown(const char*, uid_t, gid_t) { return Refuse(); }
int RefuseUtimens(const char*, const struct timespec[2]) { return Refuse(); }
int RefuseSetxattr(const char*, const char*, const char*, size_t, int) { return Refuse(); }
int RefuseRemovexattr(const char*, const char*) { return Refuse(); }
int RefuseMknod(const char*, mode_t, dev_t) { return Refuse(); }

// --- the read path -----------------------------------------------------------

struct Piece {
  uint64_t pos;
  uint64_t len;
  int64_t fd;
  int64_t delta;
  uint64_t fend;
};

// Copies the pieces of [off, off+len) out of the published runs; false if
// some part is not published (or only JS can read it).
bool Collect(Fs* fs, Node* n, uint64_t off, uint64_t len, Piece* pieces, int* count) {
  uint64_t pos = off;
  uint64_t end = off + len;
  int np = 0;
  bool ok = true;
  pthread_rwlock_rdlock(&fs->lock);
  while (ok && pos < end) {
    uint64_t r = pos / fs->region;
    uint64_t c = r >> kChunkShift;
    Region* reg = c < n->chunks.size() && n->chunks[c] ? n->chunks[c][r & (kChunkRegions - 1)] : nullptr;
    if (!reg) {
      ok = false;
      break;
    }
    uint32_t lo = 0, hi = reg->count - 1;  // the run containing pos
    while (lo < hi) {
      uint32_t mid = (lo + hi + 1) / 2;
      if (reg->runs[mid].off <= pos) lo = mid; else hi = mid - 1;
    }
    uint64_t before = pos;
    for (uint32_t i = lo; i < reg->count && pos < end; i++) {
      const Run& run = reg->runs[i];
      if (run.off > pos || run.off + run.len <= pos || run.fd == kSlow) {
        ok = false;
        break;
      }
      uint64_t e = run.off + run.len < end ? run.off + run.len : end;
      Piece* prev = np > 0 ? &pieces[np - 1] : nullptr;
      if (prev && prev->fd == run.fd && prev->pos + prev->len == pos && prev->delta == run.delta && prev->fend == run.fend) {
        prev->len += e - pos;
      } else if (np == kMaxPieces) {
        ok = false;
        break;
      } else {
        pieces[np++] = Piece{pos, e - pos, run.fd, run.delta, run.fend};
      }
      pos = e;
    }
    if (pos == before) ok = false;
  }
  pthread_rwlock_unlock(&fs->lock);
  *count = np;
  return ok;
}

// The pieces into buf (which holds [off, ...)); false on any error or short
// read: JS then reads the whole request again and words the error.
bool ReadPieces(char* buf, uint64_t off, const Piece* pieces, int count) {
  for (int i = 0; i < count; i++) {
    const Piece& p = pieces[i];
    char* at = buf + (p.pos - off);
    if (p.fd == kZero) {
      memset(at, 0, p.len);
      continue;
    }
    int64_t from = static_cast<int64_t>(p.pos) + p.delta;
    if (from < 0) return false;
    uint64_t file = static_cast<uint64_t>(from);
    uint64_t inFile = file >= p.fend ? 0 : (p.fend - file < p.len ? p.fend - file : p.len);
    uint64_t done = 0;
    while (done < inFile) {
      ssize_t r = pread(static_cast<int>(p.fd), at + done, inFile - done, static_cast<off_t>(file + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      done += static_cast<uint64_t>(r);
    }
    if (done < p.len) memset(at + done, 0, p.len - done);
  }
  return true;
}

int OpRead(const char*, char* buf, size_t size, off_t offset, struct fuse_file_info* fi) {
  Fs* fs = Self();
  Node* n = At(fs, fi->fh);
  if (!n || n->dir) return -EBADF;
  if (fs->detached) return -EIO;
  if (!n->view) return static_cast<int>(Ask(fs, kRead, static_cast<int>(fi->fh), static_cast<double>(offset), size, buf));
  int64_t nsize = n->size.load();
  if (offset < 0) return -EINVAL;
  if (offset >= nsize) return 0;
  uint64_t len = static_cast<uint64_t>(nsize - offset) < size ? static_cast<uint64_t>(nsize - offset) : size;
  if (n->stale) return -EIO;
  Piece pieces[kMaxPieces];
  int count = 0;
  fs->inflight++;
  bool done = !fs->detached && Collect(fs, n, static_cast<uint64_t>(offset), len, pieces, &count) &&
              ReadPieces(buf, static_cast<uint64_t>(offset), pieces, count);
  fs->inflight--;
  if (done) {
    fs->fastReads++;
    return static_cast<int>(len);
  }
  fs->slowReads++;
  return static_cast<int>(Ask(fs, kRead, static_cast<int>(fi->fh), static_cast<double>(offset), len, buf));
}

// --- the table of published runs (JS thread, under the write lock) -----------

void FreeRegions(Fs* fs, Node* n) {
  for (Region** chunk : n->chunks) {
    if (!chunk) continue;
    for (uint64_t i = 0; i < kChunkRegions; i++) {
      if (chunk[i]) fs->bytes -= RegionBytes(chunk[i]->count);
      free(chunk[i]);
    }
    fs->bytes -= kChunkRegions * sizeof(Region*);
    free(chunk);
  }
  n->chunks.clear();
  n->chunks.shrink_to_fit();
}

void FlushAll(Fs* fs) {
  for (auto& n : fs->nodes) FreeRegions(fs, n.get());
  fs->flushes++;
}

// --- the loop thread ---------------------------------------------------------

void* Loop(void* arg) {
  Fs* fs = static_cast<Fs*>(arg);
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are Node's
  fuse_loop_mt(fs->fuse);
  fuse_unmount(fs->mountPoint.c_str(), fs->chan);  // closes the channel (and unmounts, if still mounted)
  fuse_destroy(fs->fuse);
  fs->fuse = nullptr;
  fs->exitCall.op = kExit;
  fs->tsfn.BlockingCall(&fs->exitCall);
  fs->tsfn.Release();
  return nullptr;
}

// libfuse2 says why a mount failed on stderr only: catch those lines.
class StderrCapture {
 public:
  StderrCapture() {
    fd_ = memfd_create("chainfs-mount", 0);
    saved_ = fd_ >= 0 ? dup(2) : -1;
    if (saved_ >= 0) dup2(fd_, 2);
  }
  std::string Finish() {
    std::string out;
    if (saved_ >= 0) {
      dup2(saved_, 2);
      close(saved_);
      saved_ = -1;
      char tmp[4096];
      ssize_t r = pread(fd_, tmp, sizeof tmp, 0);
      if (r > 0) out.assign(tmp, static_cast<size_t>(r));
    }
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    return out;
  }
  ~StderrCapture() { Finish(); }

 private:
  int fd_ = -1;
  int saved_ = -1;
};

// libfuse's lines as one: "fuse: " prefixes dropped, joined with "; ".
std::string OneLine(const std::string& s) {
  std::string out;
  size_t at = 0;
  while (at < s.size()) {
    size_t nl = s.find('\n', at);
    std::string line = s.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? s.size() : nl + 1;
    if (line.rfind("fuse: ", 0) == 0) line = line.substr(6);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (line.empty()) continue;
    if (!out.empty()) out += "; ";
    out += line;
  }
  return out;
}

Fs* Get(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "expected a mount handle").ThrowAsJavaScriptException();
    return nullptr;
  }
  return info[0].As<Napi::External<Fs>>().Data();
}

struct timespec FromMs(double ms) {
  struct timespec t {};
  double s = ms / 1000;
  t.tv_sec = static_cast<time_t>(s);
  t.tv_nsec = static_cast<long>((ms - static_cast<double>(t.tv_sec) * 1000) * 1e6);
  if (t.tv_nsec < 0) t.tv_nsec = 0;
  return t;
}

// mount(mountPoint, options, nodes, { budget, region, statfsBlocks }, handler) → handle
Napi::Value Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsString() || !info[1].IsString() || !info[2].IsArray() || !info[3].IsObject() ||
      !info[4].IsFunction()) {
    Napi::TypeError::New(env, "mount(mountPoint, options, nodes, config, handler)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto fs = std::make_unique<Fs>();
  fs->mountPoint = info[0].As<Napi::String>().Utf8Value();
  std::string options = info[1].As<Napi::String>().Utf8Value();
  Napi::Array nodes = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < nodes.Length(); i++) {
    Napi::Object o = nodes.Get(i).As<Napi::Object>();
    auto n = std::make_unique<Node>();
    n->path = o.Get("path").As<Napi::String>().Utf8Value();
    n->parent = o.Get("parent").As<Napi::Number>().Int32Value();
    n->dir = o.Get("dir").As<Napi::Boolean>().Value();
    n->view = o.Get("view").As<Napi::Boolean>().Value();
    n->mode = o.Get("mode").As<Napi::Number>().Uint32Value();
    n->size = static_cast<int64_t>(o.Get("size").As<Napi::Number>().DoubleValue());
    n->blocks = static_cast<int64_t>(o.Get("blocks").As<Napi::Number>().DoubleValue());
    n->mtime = FromMs(o.Get("mtimeMs").As<Napi::Number>().DoubleValue());
    n->ctime = FromMs(o.Get("ctimeMs").As<Napi::Number>().DoubleValue());
    fs->nodes.push_back(std::move(n));
  }
  Napi::Object config = info[3].As<Napi::Object>();
  fs->budget = static_cast<size_t>(config.Get("budget").As<Napi::Number>().DoubleValue());
  fs->region = static_cast<uint64_t>(config.Get("region").As<Napi::Number>().DoubleValue());
  fs->statfsBlocks = static_cast<uint64_t>(config.Get("statfsBlocks").As<Napi::Number>().DoubleValue());
  fs->files = fs->nodes.size();
  if (env.IsExceptionPending() || fs->region == 0) {
    if (!env.IsExceptionPending()) Napi::TypeError::New(env, "bad config").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  struct fuse_operations ops {};
  ops.getattr = OpGetattr;
  ops.fgetattr = OpFgetattr;
  ops.access = OpAccess;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.statfs = OpStatfs;
  ops.write = RefuseWrite;
  ops.truncate = RefuseTruncate;
  ops.ftruncate = RefuseFtruncate;
  ops.create = RefuseCreate;
  ops.unlink = RefusePath;
  ops.rmdir = RefusePath;
  ops.mkdir = RefuseMode;
  ops.chmod = RefuseMode;
  ops.rename = RefuseTwo;
  ops.link = RefuseTwo;
  ops.symlink = RefuseTwo;
  ops.chown = RefuseChown;
  ops.utimens = RefuseUtimens;
  ops.setxattr = RefuseSetxattr;
  ops.removexattr = RefuseRemovexattr;
  ops.mknod = RefuseMknod;
  ops.flag_nopath = 1;  // reads by handle: no path built under libfuse's tree lock
  ops.flag_nullpath_ok = 1;

  const char* argv[] = {"chainfs", "-o", options.c_str()};
  struct fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  std::string why;
  {
    StderrCapture capture;
    fs->chan = fuse_mount(fs->mountPoint.c_str(), &args);
    if (fs->chan) {
      fs->fuse = fuse_new(fs->chan, &args, &ops, sizeof ops, fs.get());
      if (!fs->fuse) fuse_unmount(fs->mountPoint.c_str(), fs->chan);
    }
    why = OneLine(capture.Finish());
  }
  fuse_opt_free_args(&args);
  if (!fs->fuse) {
    Napi::Error::New(env, why.empty() ? "cannot mount" : why).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  fs->tsfn = Tsfn::New(env, info[4].As<Napi::Function>(), "chainfs-fuse", 0, 1, fs.get());
  if (pthread_create(&fs->thread, nullptr, Loop, fs.get()) != 0) {
    fuse_unmount(fs->mountPoint.c_str(), fs->chan);
    fuse_destroy(fs->fuse);
    fs->tsfn.Release();
    Napi::Error::New(env, "cannot start the FUSE thread").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  pthread_detach(fs->thread);
  // The handle lives as long as the process: the loop thread may outlive
  // every JS reference to it.
  return Napi::External<Fs>::New(env, fs.release());
}

// reply(call, result[, bytes]): the answer to one call; for a read, the
// bytes (result of them) are copied into FUSE's buffer.
Napi::Value Reply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "reply(call, result[, bytes])").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Call* c = info[0].As<Napi::External<Call>>().Data();
  int64_t result = info[1].As<Napi::Number>().Int64Value();
  if (c->op == kRead && result > 0) {
    if (info.Length() < 3 || !info[2].IsBuffer()) {
      result = -EIO;
    } else {
      Napi::Buffer<char> b = info[2].As<Napi::Buffer<char>>();
      if (static_cast<uint64_t>(result) > c->len || static_cast<size_t>(result) > b.Length()) {
        result = -EIO;
      } else {
        memcpy(c->buf, b.Data(), static_cast<size_t>(result));
      }
    }
  }
  c->result = result;
  sem_post(&c->done);
  return env.Undefined();
}

// publish(handle, node, regionStart, runs: Float64Array [off, len, fd, delta, fend]*)
Napi::Value Publish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  if (info.Length() < 4 || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsTypedArray()) {
    Napi::TypeError::New(env, "publish(handle, node, regionStart, runs)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Node* n = At(fs, info[1].As<Napi::Number>().Int64Value());
  Napi::Float64Array runs = info[3].As<Napi::Float64Array>();
  uint64_t start = static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue());
  uint32_t count = static_cast<uint32_t>(runs.ElementLength() / 5);
  if (!n || !n->view || count == 0 || start % fs->region != 0) return env.Undefined();
  Region* reg = static_cast<Region*>(malloc(RegionBytes(count)));
  if (!reg) return env.Undefined();
  reg->count = count;
  for (uint32_t i = 0; i < count; i++) {
    reg->runs[i] = Run{static_cast<uint64_t>(runs[5 * i]), static_cast<uint64_t>(runs[5 * i + 1]),
                       static_cast<int64_t>(runs[5 * i + 2]), static_cast<int64_t>(runs[5 * i + 3]),
                       static_cast<uint64_t>(runs[5 * i + 4])};
  }
  uint64_t r = start / fs->region;
  uint64_t c = r >> kChunkShift;
  pthread_rwlock_wrlock(&fs->lock);
  if (fs->bytes + RegionBytes(count) + kChunkRegions * sizeof(Region*) > fs->budget) FlushAll(fs);
  if (c >= n->chunks.size()) n->chunks.resize(c + 1, nullptr);
  if (!n->chunks[c]) {
    n->chunks[c] = static_cast<Region**>(calloc(kChunkRegions, sizeof(Region*)));
    if (n->chunks[c]) fs->bytes += kChunkRegions * sizeof(Region*);
  }
  if (n->chunks[c]) {
    Region*& slot = n->chunks[c][r & (kChunkRegions - 1)];
    if (slot) fs->bytes -= RegionBytes(slot->count);
    free(slot);
    slot = reg;
    fs->bytes += RegionBytes(count);
  } else {
    free(reg);
  }
  pthread_rwlock_unlock(&fs->lock);
  return env.Undefined();
}

// stale(handle, node): the view's reads fail with EIO from now on.
Napi::Value Stale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  Node* n = info.Length() > 1 && info[1].IsNumber() ? At(fs, info[1].As<Napi::Number>().Int64Value()) : nullptr;
  if (!n) return env.Undefined();
  n->stale = true;
  pthread_rwlock_wrlock(&fs->lock);
  FreeRegions(fs, n);
  pthread_rwlock_unlock(&fs->lock);
  return env.Undefined();
}

// detach(handle): no more reads of layer files from C (JS is about to close
// them); waits for the reads in flight.
Napi::Value Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  fs->detached = true;
  for (int i = 0; i < 2000 && fs->inflight.load() > 0; i++) usleep(1000);
  return env.Undefined();
}

// stats(handle) → { fastReads, slowReads, publishedBytes, flushes }
Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fs* fs = Get(info);
  if (!fs) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
  o.Set("fastReads", Napi::Number::New(env, static_cast<double>(fs->fastReads.load())));
  o.Set("slowReads", Napi::Number::New(env, static_cast<double>(fs->slowReads.load())));
  pthread_rwlock_rdlock(&fs->lock);
  o.Set("publishedBytes", Napi::Number::New(env, static_cast<double>(fs->bytes)));
  pthread_rwlock_unlock(&fs->lock);
  o.Set("flushes", Napi::Number::New(env, static_cast<double>(fs->flushes.load())));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, Mount));
  exports.Set("reply", Napi::Function::New(env, Reply));
  exports.Set("publish", Napi::Function::New(env, Publish));
  exports.Set("stale", Napi::Function::New(env, Stale));
  exports.Set("detach", Napi::Function::New(env, Detach));
  exports.Set("stats", Napi::Function::New(env, Stats));
  return exports;
}

}  // namespace

NODE_API_MODULE(chainfs_fuse, Init)
