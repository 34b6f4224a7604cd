// towerflow-predict: the C++ front of `towerflow model-server`.
//
// It listens where TF Serving would and answers PredictionService.Predict itself for every
// request it can serve exactly as the Python server would (a loaded version, the signature's
// inputs with their dtypes and compatible shapes); everything else -- other methods, versions
// it has not loaded yet, malformed requests, graph errors -- is forwarded unchanged to the
// Python server (`--upstream`), which stays the reference for behaviour and error messages.
//
// What is loaded comes from the routes file the Python server rewrites whenever its loaded
// versions or labels change (`--routes`, see serving/model_server.py `routes_text`); this process
// follows it within ~100 ms, loading each version through TensorFlow's C API (the session
// API TF Serving itself uses) from the TensorFlow wheel's libtensorflow_cc, opened with
// RTLD_DEEPBIND so its bundled protobuf never meets the system one gRPC is built against.

#include <dlfcn.h>
#include <unistd.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "tensorflow/c/c_api.h"
#include "tensorflow_serving/apis/model_service.grpc.pb.h"
#include "tensorflow_serving/apis/prediction_service.grpc.pb.h"

namespace {

using grpc::ClientContext;
using grpc::ServerContext;
using grpc::Status;
namespace tfs = tensorflow::serving;

// ---- TensorFlow C API, resolved at run time -------------------------------------------------

struct TfApi {
#define TF_FN(name) decltype(&::name) name = nullptr;
  TF_FN(TF_Version)
  TF_FN(TF_NewStatus)
  TF_FN(TF_DeleteStatus)
  TF_FN(TF_GetCode)
  TF_FN(TF_Message)
  TF_FN(TF_NewGraph)
  TF_FN(TF_DeleteGraph)
  TF_FN(TF_NewSessionOptions)
  TF_FN(TF_DeleteSessionOptions)
  TF_FN(TF_SetConfig)
  TF_FN(TF_LoadSessionFromSavedModel)
  TF_FN(TF_CloseSession)
  TF_FN(TF_DeleteSession)
  TF_FN(TF_GraphOperationByName)
  TF_FN(TF_SessionRun)
  TF_FN(TF_AllocateTensor)
  TF_FN(TF_DeleteTensor)
  TF_FN(TF_TensorData)
  TF_FN(TF_TensorByteSize)
  TF_FN(TF_TensorType)
  TF_FN(TF_NumDims)
  TF_FN(TF_Dim)
  TF_FN(TF_TensorElementCount)
#undef TF_FN

  bool Open(const std::string& library, std::string* error) {
    void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr) {
      *error = dlerror();
      return false;
    }
#define TF_SYM(name)                                                   \
  name = reinterpret_cast<decltype(name)>(dlsym(handle, #name));       \
  if (name == nullptr) {                                               \
    *error = std::string("symbol not found in ") + library + ": " #name; \
    return false;                                                      \
  }
    TF_SYM(TF_Version)
    TF_SYM(TF_NewStatus)
    TF_SYM(TF_DeleteStatus)
    TF_SYM(TF_GetCode)
    TF_SYM(TF_Message)
    TF_SYM(TF_NewGraph)
    TF_SYM(TF_DeleteGraph)
    TF_SYM(TF_NewSessionOptions)
    TF_SYM(TF_DeleteSessionOptions)
    TF_SYM(TF_SetConfig)
    TF_SYM(TF_LoadSessionFromSavedModel)
    TF_SYM(TF_CloseSession)
    TF_SYM(TF_DeleteSession)
    TF_SYM(TF_GraphOperationByName)
    TF_SYM(TF_SessionRun)
    TF_SYM(TF_AllocateTensor)
    TF_SYM(TF_DeleteTensor)
    TF_SYM(TF_TensorData)
    TF_SYM(TF_TensorByteSize)
    TF_SYM(TF_TensorType)
    TF_SYM(TF_NumDims)
    TF_SYM(TF_Dim)
    TF_SYM(TF_TensorElementCount)
#undef TF_SYM
    return true;
  }
};

TfApi tf;

struct StatusHolder {
  TF_Status* s = tf.TF_NewStatus();
  ~StatusHolder() { tf.TF_DeleteStatus(s); }
  bool ok() const { return tf.TF_GetCode(s) == TF_OK; }
};

// Tensors owned for one call; strings are released before their tensor.
struct Tensors {
  std::vector<TF_Tensor*> items;
  ~Tensors() {
    for (TF_Tensor* t : items) {
      if (t == nullptr) continue;
      if (tf.TF_TensorType(t) == TF_STRING) {
        auto* s = static_cast<TF_TString*>(tf.TF_TensorData(t));
        for (int64_t i = 0, n = tf.TF_TensorElementCount(t); i < n; ++i) TF_TString_Dealloc(&s[i]);
      }
      tf.TF_DeleteTensor(t);
    }
  }
};

size_t NumericSize(int dtype) {
  switch (dtype) {
    case TF_FLOAT: return 4;
    case TF_DOUBLE: return 8;
    case TF_INT32: return 4;
    case TF_INT64: return 8;
    default: return 0;  // not on the fast path
  }
}

// ---- what the routes file describes -----------------------------------------------------------

struct TensorSpec {
  std::string alias;
  TF_Output output{nullptr, 0};
  std::string tensor;  // "op:index"
  int dtype = 0;
  bool known_rank = false;
  std::vector<int64_t> dims;  // -1: any size
};

struct SignatureSpec {
  std::vector<TensorSpec> inputs;   // sorted by alias
  std::vector<TensorSpec> outputs;  // sorted by alias
};

struct Loaded {
  std::string path;
  TF_Graph* graph = nullptr;
  TF_Session* session = nullptr;
  std::map<std::string, SignatureSpec> signatures;
  ~Loaded() {
    if (session != nullptr) {
      StatusHolder st;
      tf.TF_CloseSession(session, st.s);
      tf.TF_DeleteSession(session, st.s);
    }
    if (graph != nullptr) tf.TF_DeleteGraph(graph);
  }
};

struct ModelRoutes {
  std::map<int64_t, std::shared_ptr<const Loaded>> versions;
  std::map<std::string, int64_t> labels;
  int64_t latest = -1;
};

// (inode, mtime in ns, size) of the routes file: changes with every rewrite (a rename).
using Stamp = std::tuple<int64_t, int64_t, int64_t>;

struct Routes {
  std::map<std::string, ModelRoutes> models;
  Stamp stamp{-1, -1, -1};  // the file these routes were built from
};

bool ResolveOutput(TF_Graph* graph, TensorSpec* spec) {
  auto colon = spec->tensor.rfind(':');
  std::string op = spec->tensor.substr(0, colon);
  int index = colon == std::string::npos ? 0 : std::stoi(spec->tensor.substr(colon + 1));
  spec->output.oper = tf.TF_GraphOperationByName(graph, op.c_str());
  spec->output.index = index;
  return spec->output.oper != nullptr;
}

// A dummy batch for warm-up: one row, unknown inner sizes 2, zeros / empty strings.
void WarmUp(const Loaded& loaded) {
  for (const auto& [name, sig] : loaded.signatures) {
    Tensors in, out;
    std::vector<TF_Output> in_ops, out_ops;
    for (const auto& spec : sig.inputs) {
      std::vector<int64_t> shape;
      for (size_t d = 0; d < spec.dims.size(); ++d) shape.push_back(spec.dims[d] < 0 ? (d == 0 ? 1 : 2) : spec.dims[d]);
      int64_t n = 1;
      for (int64_t s : shape) n *= s;
      size_t size = spec.dtype == TF_STRING ? sizeof(TF_TString) : NumericSize(spec.dtype);
      if (size == 0) return;
      TF_Tensor* t = tf.TF_AllocateTensor(static_cast<TF_DataType>(spec.dtype), shape.data(), shape.size(), n * size);
      if (spec.dtype == TF_STRING) {
        auto* s = static_cast<TF_TString*>(tf.TF_TensorData(t));
        for (int64_t i = 0; i < n; ++i) TF_TString_Init(&s[i]);
      } else {
        std::memset(tf.TF_TensorData(t), 0, n * size);
      }
      in.items.push_back(t);
      in_ops.push_back(spec.output);
    }
    for (const auto& spec : sig.outputs) out_ops.push_back(spec.output);
    out.items.assign(out_ops.size(), nullptr);
    StatusHolder st;
    for (int round = 0; round < 3; ++round) {
      for (auto& t : out.items) {
        if (t != nullptr) tf.TF_DeleteTensor(t);
        t = nullptr;
      }
      tf.TF_SessionRun(loaded.session, nullptr, in_ops.data(), in.items.data(), in_ops.size(), out_ops.data(),
                       out.items.data(), out_ops.size(), nullptr, 0, nullptr, st.s);
      if (!st.ok()) break;  // best effort, as the Python server's warm-up
    }
  }
}

std::shared_ptr<const Loaded> LoadVersion(const std::string& path, std::map<std::string, SignatureSpec> signatures,
                                          const std::string& session_config) {
  auto loaded = std::make_shared<Loaded>();
  loaded->path = path;
  loaded->graph = tf.TF_NewGraph();
  StatusHolder st;
  TF_SessionOptions* options = tf.TF_NewSessionOptions();
  if (!session_config.empty()) tf.TF_SetConfig(options, session_config.data(), session_config.size(), st.s);
  const char* tags[] = {"serve"};
  loaded->session =
      tf.TF_LoadSessionFromSavedModel(options, nullptr, path.c_str(), tags, 1, loaded->graph, nullptr, st.s);
  tf.TF_DeleteSessionOptions(options);
  if (!st.ok()) {
    std::fprintf(stderr, "towerflow-predict: cannot load %s: %s\n", path.c_str(), tf.TF_Message(st.s));
    loaded->session = nullptr;
    return nullptr;
  }
  for (auto& [name, sig] : signatures) {
    for (auto* group : {&sig.inputs, &sig.outputs}) {
      for (auto& spec : *group) {
        if (!ResolveOutput(loaded->graph, &spec)) {
          std::fprintf(stderr, "towerflow-predict: %s: no tensor %s\n", path.c_str(), spec.tensor.c_str());
          return nullptr;
        }
      }
    }
  }
  loaded->signatures = std::move(signatures);
  WarmUp(*loaded);
  return loaded;
}

// The routes file, line by line (tab-separated):
//   version <model> <version> <path>
//   label   <model> <label> <version>
//   sig     <model> <version> <signature>
//   in|out  <alias> <tensor> <dtype enum> <rank or -1> <dim> ...   (belongs to the last sig)
struct VersionEntry {
  std::string model;
  int64_t version;
  std::string path;
  std::map<std::string, SignatureSpec> signatures;
};

bool ParseRoutes(const std::string& text, std::vector<VersionEntry>* versions,
                 std::map<std::string, std::map<std::string, int64_t>>* labels) {
  std::istringstream lines(text);
  std::string line;
  SignatureSpec* sig = nullptr;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::string field;
    std::istringstream fields(line);
    while (std::getline(fields, field, '\t')) f.push_back(field);
    if (f[0] == "version" && f.size() == 4) {
      versions->push_back({f[1], std::stoll(f[2]), f[3], {}});
      sig = nullptr;
    } else if (f[0] == "label" && f.size() == 4) {
      (*labels)[f[1]][f[2]] = std::stoll(f[3]);
    } else if (f[0] == "sig" && f.size() == 4) {
      if (versions->empty() || versions->back().model != f[1] || versions->back().version != std::stoll(f[2])) return false;
      sig = &versions->back().signatures[f[3]];
    } else if ((f[0] == "in" || f[0] == "out") && f.size() >= 5 && sig != nullptr) {
      TensorSpec spec;
      spec.alias = f[1];
      spec.tensor = f[2];
      spec.dtype = std::stoi(f[3]);
      int rank = std::stoi(f[4]);
      spec.known_rank = rank >= 0;
      for (int d = 0; d < rank && 5 + d < static_cast<int>(f.size()); ++d) spec.dims.push_back(std::stoll(f[5 + d]));
      if (spec.known_rank && static_cast<int>(spec.dims.size()) != rank) return false;
      (f[0] == "in" ? sig->inputs : sig->outputs).push_back(std::move(spec));
    } else {
      return false;
    }
  }
  return true;
}

class RouteTable {
 public:
  RouteTable(std::string path, std::string session_config)
      : path_(std::move(path)), session_config_(std::move(session_config)), routes_(std::make_shared<Routes>()) {}

  std::shared_ptr<const Routes> Get() const { return std::atomic_load(&routes_); }

  // The file as it is now. A request is answered here only while this equals the stamp of the
  // routes in use: from the moment the Python server rewrites the file (a version unloaded, a
  // label moved) until this process has caught up, requests go to the Python server.
  Stamp Current() const {
    struct stat info;
    if (stat(path_.c_str(), &info) != 0) return {-1, -1, -1};
    return {static_cast<int64_t>(info.st_ino),
            static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec,
            static_cast<int64_t>(info.st_size)};
  }

  // Re-read the file if it changed; loads new versions before swapping them in.
  void Refresh() {
    Stamp stamp = Current();
    if (std::get<0>(stamp) < 0 || stamp == stamp_) return;
    std::ifstream file(path_);
    std::stringstream text;
    text << file.rdbuf();
    std::vector<VersionEntry> versions;
    std::map<std::string, std::map<std::string, int64_t>> labels;
    if (!ParseRoutes(text.str(), &versions, &labels)) return;  // half-written? next poll
    stamp_ = stamp;
    auto current = Get();
    auto next = std::make_shared<Routes>();
    next->stamp = stamp;
    for (auto& entry : versions) {
      // "Latest" is the Python server's latest, loaded here or not (then it answers for it).
      auto& routed = next->models[entry.model];
      routed.latest = std::max(routed.latest, entry.version);
      std::shared_ptr<const Loaded> loaded;
      auto model = current->models.find(entry.model);
      if (model != current->models.end()) {
        auto found = model->second.versions.find(entry.version);
        if (found != model->second.versions.end() && found->second->path == entry.path) loaded = found->second;
      }
      if (loaded == nullptr) loaded = LoadVersion(entry.path, std::move(entry.signatures), session_config_);
      if (loaded == nullptr) continue;  // the Python server answers for it
      routed.versions[entry.version] = loaded;
    }
    for (auto& [name, model] : next->models) model.labels = labels[name];
    std::atomic_store(&routes_, std::shared_ptr<const Routes>(next));
  }

 private:
  std::string path_;
  std::string session_config_;
  Stamp stamp_{-1, -1, -1};
  std::shared_ptr<const Routes> routes_;
};

// ---- Predict ------------------------------------------------------------------------------------

bool Compatible(const TensorSpec& spec, const tensorflow::TensorShapeProto& shape) {
  if (shape.unknown_rank()) return false;
  if (!spec.known_rank) return true;
  if (shape.dim_size() != static_cast<int>(spec.dims.size())) return false;
  for (int d = 0; d < shape.dim_size(); ++d) {
    if (spec.dims[d] >= 0 && spec.dims[d] != shape.dim(d).size()) return false;
  }
  return true;
}

template <typename T, typename Repeated>
bool CopyTyped(const Repeated& values, int64_t n, void* data) {
  if (values.size() != n) return false;  // TF's "repeat the last value" form: the Python server
  std::copy(values.begin(), values.end(), static_cast<T*>(data));
  return true;
}

int64_t TypedCount(const tensorflow::TensorProto& proto, int dtype) {
  if (dtype == TF_FLOAT) return proto.float_val_size();
  if (dtype == TF_DOUBLE) return proto.double_val_size();
  if (dtype == TF_INT32) return proto.int_val_size();
  return proto.int64_val_size();
}

TF_Tensor* ToTensor(const tensorflow::TensorProto& proto, const TensorSpec& spec) {
  if (proto.dtype() != spec.dtype || !Compatible(spec, proto.tensor_shape())) return nullptr;
  std::vector<int64_t> shape;
  int64_t n = 1;
  for (const auto& dim : proto.tensor_shape().dim()) {
    // A size that would overflow the count is no real request: the Python server refuses it.
    if (dim.size() < 0 || (dim.size() > 0 && n > INT64_MAX / 16 / dim.size())) return nullptr;
    shape.push_back(dim.size());
    n *= dim.size();
  }
  if (spec.dtype == TF_STRING) {
    if (proto.string_val_size() != n) return nullptr;
    TF_Tensor* t = tf.TF_AllocateTensor(TF_STRING, shape.data(), shape.size(), n * sizeof(TF_TString));
    auto* s = static_cast<TF_TString*>(tf.TF_TensorData(t));
    for (int64_t i = 0; i < n; ++i) {
      TF_TString_Init(&s[i]);
      const std::string& v = proto.string_val(static_cast<int>(i));
      TF_TString_Copy(&s[i], v.data(), v.size());
    }
    return t;
  }
  size_t size = NumericSize(spec.dtype);
  if (size == 0) return nullptr;
  const std::string& content = proto.tensor_content();
  if (!content.empty() && content.size() != n * size) return nullptr;
  // Values in the typed field: count them before allocating (a shape alone may ask for any size).
  if (content.empty() && TypedCount(proto, spec.dtype) != n) return nullptr;
  TF_Tensor* t = tf.TF_AllocateTensor(static_cast<TF_DataType>(spec.dtype), shape.data(), shape.size(), n * size);
  void* data = tf.TF_TensorData(t);
  bool ok = true;
  if (!content.empty()) {
    std::memcpy(data, content.data(), content.size());
  } else if (spec.dtype == TF_FLOAT) {
    ok = CopyTyped<float>(proto.float_val(), n, data);
  } else if (spec.dtype == TF_DOUBLE) {
    ok = CopyTyped<double>(proto.double_val(), n, data);
  } else if (spec.dtype == TF_INT32) {
    ok = CopyTyped<int32_t>(proto.int_val(), n, data);
  } else {
    ok = CopyTyped<int64_t>(proto.int64_val(), n, data);
  }
  if (!ok) {
    tf.TF_DeleteTensor(t);
    return nullptr;
  }
  return t;
}

void FillProto(TF_Tensor* t, tensorflow::TensorProto* proto) {
  int dtype = tf.TF_TensorType(t);
  proto->set_dtype(static_cast<tensorflow::DataType>(dtype));
  for (int d = 0, rank = tf.TF_NumDims(t); d < rank; ++d) proto->mutable_tensor_shape()->add_dim()->set_size(tf.TF_Dim(t, d));
  if (dtype == TF_STRING) {
    auto* s = static_cast<const TF_TString*>(tf.TF_TensorData(t));
    int64_t n = tf.TF_TensorElementCount(t);
    auto* values = proto->mutable_string_val();
    values->Reserve(static_cast<int>(n));
    for (int64_t i = 0; i < n; ++i) values->Add(std::string(TF_TString_GetDataPointer(&s[i]), TF_TString_GetSize(&s[i])));
  } else {
    proto->set_tensor_content(tf.TF_TensorData(t), tf.TF_TensorByteSize(t));
  }
}

// True when answered here; false: the Python server should answer (it knows every error).
bool FastPredict(const RouteTable& table, const tfs::PredictRequest& request, tfs::PredictResponse* response) {
  const auto& spec = request.model_spec();
  auto routes = table.Get();
  if (routes->stamp != table.Current()) return false;  // catching up with the Python server
  auto model = routes->models.find(spec.name());
  if (spec.name().empty() || model == routes->models.end()) return false;
  int64_t version = model->second.latest;
  if (spec.version_choice_case() == tfs::ModelSpec::kVersionLabel) {
    auto label = model->second.labels.find(spec.version_label());
    if (label == model->second.labels.end()) return false;
    version = label->second;
  } else if (spec.version_choice_case() == tfs::ModelSpec::kVersion) {
    version = spec.version().value();
  }
  auto found = model->second.versions.find(version);
  if (found == model->second.versions.end()) return false;
  const Loaded& loaded = *found->second;
  const std::string& sig_name = spec.signature_name().empty() ? "serving_default" : spec.signature_name();
  auto sig_it = loaded.signatures.find(sig_name);
  if (sig_it == loaded.signatures.end()) return false;
  const SignatureSpec& sig = sig_it->second;
  if (request.inputs_size() != static_cast<int>(sig.inputs.size())) return false;

  Tensors inputs;
  std::vector<TF_Output> input_ops;
  for (const auto& input : sig.inputs) {
    auto proto = request.inputs().find(input.alias);
    if (proto == request.inputs().end()) return false;
    TF_Tensor* t = ToTensor(proto->second, input);
    if (t == nullptr) return false;
    inputs.items.push_back(t);
    input_ops.push_back(input.output);
  }
  std::vector<const TensorSpec*> wanted;
  if (request.output_filter_size() == 0) {
    for (const auto& output : sig.outputs) wanted.push_back(&output);
  } else {
    for (const auto& alias : request.output_filter()) {
      const TensorSpec* match = nullptr;
      for (const auto& output : sig.outputs) {
        if (output.alias == alias) match = &output;
      }
      if (match == nullptr) return false;
      for (const auto* already : wanted) {
        if (already == match) return false;
      }
      wanted.push_back(match);
    }
  }
  std::vector<TF_Output> output_ops;
  for (const auto* output : wanted) output_ops.push_back(output->output);
  Tensors outputs;
  outputs.items.assign(output_ops.size(), nullptr);
  StatusHolder st;
  tf.TF_SessionRun(loaded.session, nullptr, input_ops.data(), inputs.items.data(), input_ops.size(),
                   output_ops.data(), outputs.items.data(), output_ops.size(), nullptr, 0, nullptr, st.s);
  if (!st.ok()) return false;
  response->mutable_model_spec()->set_name(spec.name());
  response->mutable_model_spec()->mutable_version()->set_value(version);
  response->mutable_model_spec()->set_signature_name(sig_name);
  auto* out = response->mutable_outputs();
  for (size_t i = 0; i < wanted.size(); ++i) FillProto(outputs.items[i], &(*out)[wanted[i]->alias]);
  return true;
}

// One call passed on to the Python server unchanged, under the caller's deadline.
template <typename Stub, typename Request, typename Response>
Status Forward(const ServerContext* ctx, Stub* stub,
               Status (Stub::*method)(ClientContext*, const Request&, Response*), const Request& request,
               Response* response) {
  ClientContext forward;
  forward.set_deadline(ctx->deadline());
  return (stub->*method)(&forward, request, response);
}

class PredictionImpl final : public tfs::PredictionService::Service {
 public:
  PredictionImpl(const RouteTable& table, std::shared_ptr<grpc::Channel> upstream)
      : table_(table), upstream_(tfs::PredictionService::NewStub(upstream)) {}

  Status Predict(ServerContext* ctx, const tfs::PredictRequest* request, tfs::PredictResponse* response) override {
    if (FastPredict(table_, *request, response)) {
      ctx->AddInitialMetadata("x-towerflow-predict", "native");  // tests tell the two paths apart
      return Status::OK;
    }
    response->Clear();
    return Forward(ctx, upstream_.get(), &tfs::PredictionService::Stub::Predict, *request, response);
  }
  Status GetModelMetadata(ServerContext* ctx, const tfs::GetModelMetadataRequest* request,
                          tfs::GetModelMetadataResponse* response) override {
    return Forward(ctx, upstream_.get(), &tfs::PredictionService::Stub::GetModelMetadata, *request, response);
  }
  Status Classify(ServerContext* ctx, const tfs::ClassificationRequest* request,
                  tfs::ClassificationResponse* response) override {
    return Forward(ctx, upstream_.get(), &tfs::PredictionService::Stub::Classify, *request, response);
  }
  Status Regress(ServerContext* ctx, const tfs::RegressionRequest* request, tfs::RegressionResponse* response) override {
    return Forward(ctx, upstream_.get(), &tfs::PredictionService::Stub::Regress, *request, response);
  }
  Status MultiInference(ServerContext* ctx, const tfs::MultiInferenceRequest* request,
                        tfs::MultiInferenceResponse* response) override {
    return Forward(ctx, upstream_.get(), &tfs::PredictionService::Stub::MultiInference, *request, response);
  }

 private:
  const RouteTable& table_;
  std::unique_ptr<tfs::PredictionService::Stub> upstream_;
};

class ModelImpl final : public tfs::ModelService::Service {
 public:
  explicit ModelImpl(std::shared_ptr<grpc::Channel> upstream) : upstream_(tfs::ModelService::NewStub(upstream)) {}

  Status GetModelStatus(ServerContext* ctx, const tfs::GetModelStatusRequest* request,
                        tfs::GetModelStatusResponse* response) override {
    return Forward(ctx, upstream_.get(), &tfs::ModelService::Stub::GetModelStatus, *request, response);
  }
  Status HandleReloadConfigRequest(ServerContext* ctx, const tfs::ReloadConfigRequest* request,
                                   tfs::ReloadConfigResponse* response) override {
    return Forward(ctx, upstream_.get(), &tfs::ModelService::Stub::HandleReloadConfigRequest, *request, response);
  }

 private:
  std::unique_ptr<tfs::ModelService::Stub> upstream_;
};

std::atomic<bool> stopping{false};

void OnSignal(int) { stopping = true; }

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

// ConfigProto with intra_op_parallelism_threads (field 2) and inter_op_parallelism_threads (5).
std::string SessionConfig(int intra, int inter) {
  std::string config;
  auto varint = [&config](int field, int value) {
    config.push_back(static_cast<char>(field << 3));
    for (unsigned v = static_cast<unsigned>(value); ; v >>= 7) {
      if (v < 0x80) {
        config.push_back(static_cast<char>(v));
        break;
      }
      config.push_back(static_cast<char>((v & 0x7f) | 0x80));
    }
  };
  if (intra > 0) varint(2, intra);
  if (inter > 0) varint(5, inter);
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = Flag(argc, argv, "listen", "");
  std::string upstream = Flag(argc, argv, "upstream", "");
  std::string routes = Flag(argc, argv, "routes", "");
  std::string library = Flag(argc, argv, "tensorflow-library", "");
  // Never outlive the model server that started it (killed with SIGKILL, it cannot stop us): a
  // front left behind would hold the port and answer for versions nobody manages. Checked by
  // polling our parent rather than with PR_SET_PDEATHSIG, whose signal comes when the *thread*
  // that started us ends, which in a Python server may be long before the process does.
  const long parent = std::stol(Flag(argc, argv, "parent-pid", "0"));
  auto orphaned = [parent] { return parent > 0 && getppid() != parent; };
  if (orphaned()) return 1;
  int intra = std::stoi(Flag(argc, argv, "intra-op", "0"));
  int inter = std::stoi(Flag(argc, argv, "inter-op", "0"));
  // Requests above this are refused (RESOURCE_EXHAUSTED) before they are decoded; -1: any size.
  int max_request = std::stoi(Flag(argc, argv, "max-request-bytes", "-1"));
  if (listen.empty() || upstream.empty() || routes.empty() || library.empty()) {
    std::fprintf(stderr,
                 "usage: towerflow-predict --listen HOST:PORT --upstream HOST:PORT --routes FILE "
                 "--tensorflow-library PATH [--intra-op N] [--inter-op N] [--max-request-bytes N]\n");
    return 2;
  }
  std::string error;
  if (!tf.Open(library, &error)) {
    std::fprintf(stderr, "towerflow-predict: cannot open TensorFlow: %s\n", error.c_str());
    return 1;
  }
  RouteTable table(routes, SessionConfig(intra, inter));
  table.Refresh();  // serve the fast path from the first request

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(upstream, grpc::InsecureChannelCredentials(), args);
  PredictionImpl prediction(table, channel);
  ModelImpl models(channel);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(max_request);
  builder.SetMaxSendMessageSize(-1);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&prediction);
  builder.RegisterService(&models);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "towerflow-predict: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  std::printf("towerflow-predict listening on port %d (TensorFlow %s)\n", port, tf.TF_Version());
  std::fflush(stdout);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  while (!stopping && !orphaned()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    table.Refresh();
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}
