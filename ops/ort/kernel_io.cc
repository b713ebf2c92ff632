#include "ort/kernel_io.h"

#include <cstring>
#include <type_traits>

#include "conv/conv_params.h"

namespace im2win {

void Check(const OrtApi& api, OrtStatus* status) {
  if (status == nullptr) return;
  std::string message = api.GetErrorMessage(status);
  api.ReleaseStatus(status);
  throw OrtCallError(message);
}

namespace {

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

}  // namespace

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
  // size counts the terminating NUL. A NUL inside the value would cut it short in any C string
  // ("OIHW\0im2win.channels16" read as OIHW on packed weights): refused, never read as a prefix.
  const size_t length = std::min(size, value.size()) > 0 ? std::min(size, value.size()) - 1 : 0;
  value.resize(length);
  if (value.find('\0') != std::string::npos)
    throw ConvError(std::string("attribute '") + name + "' contains a NUL character");
  return value;
}

int64_t GetInt(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t def) {
  int64_t value = def;
  if (AttributeMissing(api, api.KernelInfoGetAttribute_int64(info, name, &value), name, "an int")) return def;
  return value;
}

ConvAttributes GetWindowAttributes(const OrtApi& api, const OrtKernelInfo* info) {
  ConvAttributes a;
  a.auto_pad = GetString(api, info, "auto_pad", "NOTSET");
  a.kernel_shape = GetList<int64_t>(api, info, "kernel_shape");
  a.pads = GetList<int64_t>(api, info, "pads");
  a.strides = GetList<int64_t>(api, info, "strides");
  a.dilations = GetList<int64_t>(api, info, "dilations");
  return a;
}

int64_t TensorView::elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n = CheckedMul(n, d, [this] { return "element count of " + DimsToString(dims); });
  return n;
}

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

template std::vector<int64_t> GetList<int64_t>(const OrtApi&, const OrtKernelInfo*, const char*);
template std::vector<float> GetList<float>(const OrtApi&, const OrtKernelInfo*, const char*);

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

OrtStatus* MakeNodeError(const OrtApi& api, const std::string& node_name, const std::string& message,
                         const char* op) {
  const std::string text = std::string("com.im2win::") + op + " node '" + node_name + "': " + message;
  return api.CreateStatus(ORT_INVALID_ARGUMENT, text.c_str());
}

}  // namespace im2win
