// The seam between tlcv and libtorch's c10d: a TCPStore rendezvous, a ProcessGroupGloo, and the few
// collectives data-parallel training needs, behind a C ABI that never lets a C++ exception escape
// (every function returns 0 or writes a message into `err` and returns 1).
//
// ABI note (why Debian's 2022 gloo headers are safe here): ProcessGroupGloo.hpp only declares gloo
// types, and ProcessGroupGloo holds every one of them through std::shared_ptr / std::unique_ptr
// (store_, contexts_, Options::devices, the UnboundBuffers of send/recv work), so sizeof of the
// process group and of its Options does not depend on gloo's struct layouts. GlooStore, whose vtable
// depends on gloo::rendezvous::Store's, is constructed inside libtorch, never here. This file calls
// only exported libtorch entry points (TCPStore's and ProcessGroupGloo's constructors,
// ProcessGroupGloo::Options::Options, createDeviceForHostname, the virtual collectives through
// c10d::Backend and c10d::Work); `nm` of the compiled object shows no gloo function, vtable or
// typeinfo defined or referenced (build.rs checks this on every build and fails otherwise), and every
// call is exercised between two processes by crates/core/tests/dist.rs.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// One rank's membership: what the Rust side holds as an opaque pointer.
struct Group {
  c10::intrusive_ptr<c10d::Store> store;  // the un-prefixed store, for the roll call
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int world;
};

namespace {

// Copies `msg` into the caller's buffer (always NUL-terminated).
void write_err(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = std::min(len - 1, msg.size());
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Runs `body`, turning any exception into a message and the return value 1.
template <typename F>
int guarded(char* err, size_t len, F&& body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    write_err(err, len, e.what_without_backtrace());
  } catch (const std::exception& e) {
    write_err(err, len, e.what());
  } catch (...) {
    write_err(err, len, "unknown C++ exception");
  }
  return 1;
}

std::vector<at::Tensor> tensors_of(const at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

// Contiguous runs of tensors of one dtype, each about `bucket_bytes` (at least one tensor).
std::vector<std::vector<at::Tensor>> buckets_of(const std::vector<at::Tensor>& ts, int64_t bucket_bytes) {
  std::vector<std::vector<at::Tensor>> out;
  int64_t bytes = 0;
  for (const auto& t : ts) {
    bool fresh = out.empty() || bytes >= bucket_bytes || out.back().front().scalar_type() != t.scalar_type();
    if (fresh) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(t);
    bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  return out;
}

at::Tensor flatten(const std::vector<at::Tensor>& bucket) {
  std::vector<at::Tensor> flat;
  flat.reserve(bucket.size());
  for (const auto& t : bucket) flat.push_back(t.detach().reshape({-1}));
  return at::cat(flat);
}

void unflatten_into(const at::Tensor& flat, const std::vector<at::Tensor>& bucket) {
  int64_t offset = 0;
  for (const auto& t : bucket) {
    int64_t n = t.numel();
    t.detach().copy_(flat.narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

// One in-place collective per bucket, all launched before the first wait so that Gloo's worker
// threads overlap them.
template <typename Launch>
void bucketed(const std::vector<at::Tensor>& ts, int64_t bucket_bytes, Launch&& launch, double scale) {
  at::NoGradGuard no_grad;
  auto buckets = buckets_of(ts, bucket_bytes);
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& b : buckets) {
    flats.push_back(b.size() == 1 && b.front().is_contiguous() ? b.front().detach() : flatten(b));
    std::vector<at::Tensor> one{flats.back()};
    works.push_back(launch(one));
  }
  for (size_t i = 0; i < works.size(); ++i) {
    works[i]->wait();
    if (scale != 1.0) flats[i].mul_(scale);
    if (!(buckets[i].size() == 1 && buckets[i].front().is_contiguous())) unflatten_into(flats[i], buckets[i]);
  }
}

// Sum over ranks whose backward is the same sum of the incoming gradients: what a statistic shared
// by every rank (synchronised batch norm) needs to be differentiable.
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t group) {
    ctx->saved_data["group"] = group;
    return reduce(reinterpret_cast<Group*>(group), input);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    return {reduce(g, grads[0]), at::Tensor()};
  }
  static at::Tensor reduce(Group* g, const at::Tensor& t) {
    std::vector<at::Tensor> one{t.detach().clone(at::MemoryFormat::Contiguous)};
    g->backend->allreduce(one)->wait();
    return one[0];
  }
};

std::string alive_key(int rank) { return "tlcv/alive/" + std::to_string(rank); }

}  // namespace

extern "C" {

// Rendezvous at master_addr:port (rank 0 hosts the TCPStore) and forms a Gloo group whose
// collectives fail after timeout_ms. `bind_host` is the address this rank's Gloo device listens on
// (NULL: the machine's hostname, falling back to loopback, as torch.distributed does).
int tlcv_c10d_new(const char* master_addr, uint16_t port, int rank, int world, int64_t timeout_ms,
                  const char* bind_host, Group** out, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    // c10d logs every retry and failure with a C++ backtrace; the Rust side reports failures in one
    // line, so c10's log stays at FATAL unless the user asked for a level (TORCH_CPP_LOG_LEVEL).
    if (std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr) FLAGS_caffe2_log_level = 3;
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = rank == 0;
    so.numWorkers = static_cast<size_t>(world);
    so.waitWorkers = true;
    so.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), so);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(bind_host != nullptr
                                ? c10d::ProcessGroupGloo::createDeviceForHostname(std::string(bind_host))
                                : c10d::ProcessGroupGloo::createDefaultDevice());
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("tlcv/pg", store);
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world, opts);
    *out = new Group{store, backend, rank, world};
  });
}

void tlcv_c10d_free(Group* g) {
  try {
    delete g;
  } catch (...) {
  }
}

// In-place sum (or mean when `average`) of `n` tensors over ranks, in buckets of about bucket_bytes.
int tlcv_c10d_all_reduce(Group* g, const at::Tensor* const* ts, size_t n, int average, int64_t bucket_bytes,
                         char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto launch = [&](std::vector<at::Tensor>& one) { return g->backend->allreduce(one); };
    bucketed(tensors_of(ts, n), bucket_bytes, launch, average ? 1.0 / g->world : 1.0);
  });
}

// Overwrites `n` tensors with rank `root`'s values, in buckets of about bucket_bytes.
int tlcv_c10d_broadcast(Group* g, const at::Tensor* const* ts, size_t n, int root, int64_t bucket_bytes,
                        char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    auto launch = [&](std::vector<at::Tensor>& one) { return g->backend->broadcast(one, o); };
    bucketed(tensors_of(ts, n), bucket_bytes, launch, 1.0);
  });
}

// outputs[r] (world tensors shaped like input) receives rank r's input.
int tlcv_c10d_all_gather(Group* g, const at::Tensor* input, const at::Tensor* const* outputs, char* err,
                         size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<std::vector<at::Tensor>> outs{tensors_of(outputs, static_cast<size_t>(g->world))};
    std::vector<at::Tensor> ins{*input};
    g->backend->allgather(outs, ins)->wait();
  });
}

// On `root`, outputs[r] (world tensors) receives rank r's input; elsewhere `outputs` is unused.
int tlcv_c10d_gather(Group* g, const at::Tensor* input, const at::Tensor* const* outputs, int root, char* err,
                     size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<std::vector<at::Tensor>> outs;
    if (g->rank == root) outs.push_back(tensors_of(outputs, static_cast<size_t>(g->world)));
    std::vector<at::Tensor> ins{*input};
    c10d::GatherOptions o;
    o.rootRank = root;
    g->backend->gather(outs, ins, o)->wait();
  });
}

int tlcv_c10d_barrier(Group* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { g->backend->barrier()->wait(); });
}

// *out = a new tensor holding the sum of `input` over ranks, differentiable (its gradient is the sum
// of the ranks' gradients). The caller owns *out (tch's Tensor::from_ptr takes it).
int tlcv_c10d_all_reduce_differentiable(Group* g, const at::Tensor* input, at::Tensor** out, char* err,
                                        size_t err_len) {
  return guarded(err, err_len, [&] {
    at::Tensor result = AllReduceSum::apply(*input, reinterpret_cast<int64_t>(g));
    *out = new at::Tensor(std::move(result));
  });
}

// After a failed collective: says "alive" through the store and waits up to grace_ms for the other
// ranks to say so too; lost[r] = 1 for each rank that did not. Fails (with the store's message) when
// the store itself, hosted by rank 0, cannot be reached.
int tlcv_c10d_roll_call(Group* g, int64_t grace_ms, uint8_t* lost, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    g->store->set(alive_key(g->rank), std::vector<uint8_t>{1});
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
    while (true) {
      bool all = true;
      for (int r = 0; r < g->world; ++r) {
        lost[r] = g->store->check({alive_key(r)}) ? 0 : 1;
        all = all && lost[r] == 0;
      }
      if (all || std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

}  // extern "C"
