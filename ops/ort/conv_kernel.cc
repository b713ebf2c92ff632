#include "ort/conv_kernel.h"

#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "conv/conv_driver.h"
#include "kernels/cpu_dispatch.h"
#include "conv/weight_pack.h"

namespace im2win {
namespace {

// An ORT C API call failed; carries ORT's own message.
struct OrtCallError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void Check(const OrtApi& api, OrtStatus* status) {
  if (status == nullptr) return;
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  throw OrtCallError(message);
}

// ORT reports a missing attribute as an error; tell that apart from one of another type.
bool AttributeMissing(const OrtApi& api, OrtStatus* status, const char* name, const char* expected) {
  if (status == nullptr) return false;
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  if (message.find("No attribute") != std::string::npos) return true;
  throw ConvError(std::string("attribute '") + name + "' must be " + expected + " (" + message + ")");
}

// What an attribute holds when ORT reads it as an empty list of the type asked for (ORT gives an
// empty list, not an error, for a list attribute of another type): "" for a true empty list.
std::string OtherAttributeType(const OrtApi& api, const OrtKernelInfo* info, const char* name, bool floats) {
  auto ok = [&](OrtStatus* st) {
    if (st == nullptr) return true;
    api.ReleaseStatus(st);
    return false;
  };
  size_t size = 0;
  if (floats ? ok(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)) && size > 0
             : ok(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &size)) && size > 0)
    return floats ? "a list of ints" : "a list of floats";
  float f = 0.f;
  int64_t i = 0;
  if (ok(api.KernelInfoGetAttribute_float(info, name, &f))) return "a single float";
  if (ok(api.KernelInfoGetAttribute_int64(info, name, &i))) return "a single int";
  size = 0;
  if (ok(api.KernelInfoGetAttribute_string(info, name, nullptr, &size))) return "a string";
  return "";
}

// A list attribute of the type ONNX Conv gives it; a present attribute of any other type is an
// error naming it, never a default.
template <typename T>
std::vector<T> GetList(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  constexpr bool floats = std::is_same<T, float>::value;
  const char* expected = floats ? "a list of floats" : "a list of ints";
  auto read = [&](T* out, size_t* size) {
    if constexpr (floats)
      return api.KernelInfoGetAttributeArray_float(info, name, out, size);
    else
      return api.KernelInfoGetAttributeArray_int64(info, name, out, size);
  };
  size_t size = 0;
  if (AttributeMissing(api, read(nullptr, &size), name, expected)) return {};
  if (size == 0) {
    const std::string other = OtherAttributeType(api, info, name, floats);
    if (!other.empty()) throw ConvError(std::string("attribute '") + name + "' must be " + expected + ", got " + other);
    // ONNX reads an empty list as given, with the wrong number of values (ORT refuses it too);
    // only activation_params may be empty (an activation's defaults).
    if (!floats) throw ConvError(std::string("attribute '") + name + "' is an empty list: give one value per axis");
    return {};
  }
  std::vector<T> values(size);
  Check(api, read(values.data(), &size));
  return values;
}

std::string GetString(const OrtApi& api, const OrtKernelInfo* info, const char* name, const std::string& def) {
  size_t size = 0;
  if (AttributeMissing(api, api.KernelInfoGetAttribute_string(info, name, nullptr, &size), name, "a string"))
    return def;
  std::string value(size, '\0');
  Check(api, api.KernelInfoGetAttribute_string(info, name, value.data(), &size));
  value.resize(std::strlen(value.c_str()));
  return value;
}

int64_t GetInt(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t def) {
  int64_t value = def;
  if (AttributeMissing(api, api.KernelInfoGetAttribute_int64(info, name, &value), name, "an int")) return def;
  return value;
}

struct TensorView {
  std::vector<int64_t> dims;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  const float* data = nullptr;
  int64_t elements() const {
    int64_t n = 1;
    for (int64_t d : dims) n = CheckedMul(n, d, [this] { return "element count of " + DimsToString(dims); });
    return n;
  }
};

TensorView View(const OrtApi& api, const OrtValue* value, const char* name) {
  TensorView v;
  OrtTensorTypeAndShapeInfo* info = nullptr;
  Check(api, api.GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatus* st = api.GetTensorElementType(info, &v.type);
  if (st == nullptr) st = api.GetDimensionsCount(info, &rank);
  if (st == nullptr) {
    v.dims.resize(rank);
    st = api.GetDimensions(info, v.dims.data(), rank);
  }
  api.ReleaseTensorTypeAndShapeInfo(info);
  Check(api, st);
  if (v.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    throw ConvError(std::string("input ") + name + " must be float32 (tensor(float)), got ONNX element type " +
                    std::to_string(static_cast<int>(v.type)));
  void* data = nullptr;
  if (v.elements() > 0) Check(api, api.GetTensorMutableData(const_cast<OrtValue*>(value), &data));
  v.data = static_cast<const float*>(data);
  return v;
}

// The dims ORT knows for an input at kernel creation (-1 where symbolic; empty if unknown).
std::vector<int64_t> StaticInputDims(const OrtApi& api, const OrtKernelInfo* info, size_t index) {
  OrtTypeInfo* type_info = nullptr;
  if (OrtStatus* st = api.KernelInfo_GetInputTypeInfo(info, index, &type_info)) {
    api.ReleaseStatus(st);
    return {};
  }
  std::vector<int64_t> dims;
  const OrtTensorTypeAndShapeInfo* tensor_info = nullptr;
  size_t rank = 0;
  OrtStatus* st = api.CastTypeInfoToTensorInfo(type_info, &tensor_info);
  if (st == nullptr && tensor_info != nullptr) st = api.GetDimensionsCount(tensor_info, &rank);
  if (st == nullptr && tensor_info != nullptr) {
    dims.resize(rank);
    st = api.GetDimensions(tensor_info, dims.data(), rank);
  }
  if (st != nullptr) {
    api.ReleaseStatus(st);
    dims.clear();
  }
  api.ReleaseTypeInfo(type_info);
  return dims;
}

ParallelRunner OrtRunner(const OrtApi& api, OrtKernelContext* context) {
  return [&api, context](int64_t count, const std::function<void(int64_t)>& body) {
    if (count <= 0) return;
    auto trampoline = [](void* user, size_t i) {
      (*static_cast<const std::function<void(int64_t)>*>(user))(static_cast<int64_t>(i));
    };
    Check(api, api.KernelContext_ParallelFor(context, trampoline, static_cast<size_t>(count), 0,
                                             const_cast<std::function<void(int64_t)>*>(&body)));
  };
}

}  // namespace

std::string KernelNodeName(const OrtApi& api, const OrtKernelInfo* info) {
  size_t size = 0;
  if (api.KernelInfo_GetNodeName(info, nullptr, &size) != nullptr || size == 0) return "";
  std::string name(size, '\0');
  OrtStatus* st = api.KernelInfo_GetNodeName(info, name.data(), &size);
  if (st != nullptr) {
    api.ReleaseStatus(st);
    return "";
  }
  name.resize(std::strlen(name.c_str()));
  return name;
}

OrtStatus* MakeNodeError(const OrtApi& api, const std::string& node_name, const std::string& message) {
  const std::string text = "com.im2win::Conv node '" + node_name + "': " + message;
  return api.CreateStatus(ORT_INVALID_ARGUMENT, text.c_str());
}

OrtConvKernel::OrtConvKernel(const OrtApi& api, const OrtKernelInfo* info, int threads)
    : api_(api), threads_(threads) {
  node_name_ = KernelNodeName(api, info);
  attrs_.auto_pad = GetString(api, info, "auto_pad", "NOTSET");
  attrs_.dilations = GetList<int64_t>(api, info, "dilations");
  attrs_.kernel_shape = GetList<int64_t>(api, info, "kernel_shape");
  attrs_.pads = GetList<int64_t>(api, info, "pads");
  attrs_.strides = GetList<int64_t>(api, info, "strides");
  attrs_.group = GetInt(api, info, "group", 1);
  ValidateAttributes(attrs_);
  epilogue_ = ParseEpilogue(GetString(api, info, "activation", ""), GetList<float>(api, info, "activation_params"));
  w_prepacked_ = ParseWeightLayout(GetString(api, info, "weight_layout", "OIHW"), &w_family_);
  isa_ = &SelectIsa();

  tile_preference_ = SelectTilePreference();

  // Constant weights are validated here and packed once; others are packed on every run.
  int is_constant = 0;
  const OrtValue* w = nullptr;
  Check(api, api.KernelInfoGetConstantInput_tensor(info, 1, &is_constant, &w));
  if (is_constant && w != nullptr) {
    const TensorView wv = View(api, w, "W");
    ValidateWeightShape(attrs_, wv.dims);
    w_dims_ = wv.dims;
    weights_constant_ = true;
    // With X's channels and spatial size known (the batch may be symbolic), the shapes are checked
    // now and the weights packed for the tile family the runs will use.
    std::vector<int64_t> x_dims = StaticInputDims(api, info, 0);
    if (!w_prepacked_ && x_dims.size() == wv.dims.size() && x_dims[1] > 0 && x_dims[2] > 0 && x_dims.back() > 0) {
      x_dims[0] = 1;
      const ConvShape shape = ResolveConvShape(attrs_, x_dims, wv.dims);
      PackedConstantWeights(ChooseTileFamily(*isa_, shape, tile_preference_), wv.data);
    }
  }
}

const float* OrtConvKernel::PackedConstantWeights(TileFamily family, const float* w) const {
  const int index = static_cast<int>(family);
  if (!packed_ready_[index].load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(pack_mutex_);
    if (!packed_ready_[index].load(std::memory_order_relaxed)) {
      int64_t elements = 1;
      for (int64_t d : w_dims_) elements *= d;
      packed_[index].resize(elements);
      if (elements > 0)  // M = 0 or C = 0: nothing to pack
        PackWeights(family, w, w_dims_[0], attrs_.group, elements / w_dims_[0], packed_[index].data());
      packed_ready_[index].store(true, std::memory_order_release);
    }
  }
  return packed_[index].data();
}

OrtStatus* OrtConvKernel::Compute(OrtKernelContext* context) const {
  try {
    ComputeOrThrow(context);
    return nullptr;
  } catch (const std::exception& e) {
    return MakeNodeError(api_, node_name_, e.what());
  } catch (...) {
    return MakeNodeError(api_, node_name_, "unknown error");
  }
}

void OrtConvKernel::ComputeOrThrow(OrtKernelContext* context) const {
  size_t input_count = 0;
  Check(api_, api_.KernelContext_GetInputCount(context, &input_count));
  auto input = [&](size_t i) -> const OrtValue* {
    const OrtValue* v = nullptr;
    if (i < input_count) Check(api_, api_.KernelContext_GetInput(context, i, &v));
    return v;
  };
  const OrtValue* x_value = input(0);
  const OrtValue* w_value = input(1);
  if (x_value == nullptr || w_value == nullptr) throw ConvError("inputs X and W are required");
  const TensorView x = View(api_, x_value, "X");
  const TensorView w = View(api_, w_value, "W");
  const ConvShape shape = ResolveConvShape(attrs_, x.dims, w.dims);

  const float* bias = nullptr;
  if (const OrtValue* b_value = input(2)) {
    const TensorView b = View(api_, b_value, "B");
    if (b.dims.size() != 1 || b.dims[0] != shape.out_channels)
      throw ConvError("B must have shape [" + std::to_string(shape.out_channels) + "], got " + DimsToString(b.dims));
    bias = b.data;
  }
  const std::vector<int64_t> y_dims = shape.output_dims();
  const float* residual = nullptr;
  if (const OrtValue* z_value = input(3)) {
    const TensorView z = View(api_, z_value, "Z");
    if (z.dims != y_dims)
      throw ConvError("Z must have the output's shape " + DimsToString(y_dims) + ", got " + DimsToString(z.dims));
    residual = z.data;
  }

  OrtValue* y_value = nullptr;
  Check(api_, api_.KernelContext_GetOutput(context, 0, y_dims.data(), y_dims.size(), &y_value));
  int64_t y_elements = 1;
  for (int64_t d : y_dims) y_elements *= d;
  if (y_elements == 0) return;  // batch 0: nothing to compute
  void* y_data = nullptr;
  Check(api_, api_.GetTensorMutableData(y_value, &y_data));

  std::shared_ptr<const ConvPlan> cached;
  {
    std::lock_guard<std::mutex> lock(plan_mutex_);
    if (plan_ != nullptr && plan_->shape == shape) cached = plan_;
  }
  if (cached == nullptr) {
    cached = std::make_shared<const ConvPlan>(
        MakeConvPlan(shape, epilogue_, *isa_, tile_preference_, PlanTables::kBuild, threads_));
    std::lock_guard<std::mutex> lock(plan_mutex_);
    plan_ = cached;
  }
  const ConvPlan& plan = *cached;
  const float* packed = nullptr;
  std::vector<float> run_packed;  // only for weights that arrive at run time
  const int64_t k = w.elements() / w.dims[0];
  if (w_prepacked_ && w_family_ == plan.family) {
    packed = w.data;  // packed by the rewriter for this shape: ORT's copy is the only one
  } else if (w_prepacked_) {  // packed for another tile family (another CPU or input size)
    std::vector<float> plain(w.elements());
    UnpackWeights(w_family_, w.data, w.dims[0], shape.group, k, plain.data());
    run_packed.resize(w.elements());
    PackWeights(plan.family, plain.data(), w.dims[0], shape.group, k, run_packed.data());
    packed = run_packed.data();
  } else if (weights_constant_ && w.dims == w_dims_) {
    packed = PackedConstantWeights(plan.family, w.data);
  } else {
    run_packed.resize(w.elements());
    PackWeights(plan.family, w.data, w.dims[0], shape.group, w.elements() / w.dims[0], run_packed.data());
    packed = run_packed.data();
  }
  RunConv(plan, x.data, packed, bias, residual, static_cast<float*>(y_data), OrtRunner(api_, context));
}

}  // namespace im2win
