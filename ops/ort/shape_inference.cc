#include "ort/shape_inference.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "conv/conv_nhwc.h"
#include "conv/conv_params.h"
#include "conv/pool_nhwc.h"
#include "conv/winograd_nhwc.h"

namespace im2win {
namespace {

// A dimension as ORT gives it: a value (-1 when unknown) and its symbolic name, if any.
struct Dims {
  std::vector<int64_t> values;
  std::vector<std::string> names;
};

bool ReadInputDims(const OrtApi& api, OrtShapeInferContext* context, size_t index, Dims* dims) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api.ShapeInferContext_GetInputTypeShape(context, index, &info)) {
    api.ReleaseStatus(st);
    return false;
  }
  // The context keeps ownership of `info` (ORT's C++ wrapper does not release it either).
  size_t rank = 0;
  if (info == nullptr || api.GetDimensionsCount(info, &rank) != nullptr || rank == 0) return false;
  dims->values.assign(rank, -1);
  std::vector<const char*> names(rank, nullptr);
  if (api.GetDimensions(info, dims->values.data(), rank) != nullptr ||
      api.GetSymbolicDimensions(info, names.data(), rank) != nullptr)
    return false;
  for (const char* name : names) dims->names.emplace_back(name != nullptr ? name : "");
  return true;
}

const OrtOpAttr* FindAttribute(const OrtApi& api, OrtShapeInferContext* context, const char* name) {
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* st = api.ShapeInferContext_GetAttribute(context, name, &attr)) {
    api.ReleaseStatus(st);
    return nullptr;
  }
  return attr;
}

// Reads an attribute of `type` into `out` (resized to fit); false when absent. One of another
// type throws ConvError: the kernel refuses it, so no shape is inferred from a default.
template <typename T>
bool ReadAttribute(const OrtApi& api, OrtShapeInferContext* context, const char* name, OrtOpAttrType type,
                   std::vector<T>* out) {
  const OrtOpAttr* attr = FindAttribute(api, context, name);
  if (attr == nullptr) return false;
  size_t bytes = 0;
  // The first call, with no room, tells the size.
  if (OrtStatus* st = api.ReadOpAttr(attr, type, nullptr, 0, &bytes)) api.ReleaseStatus(st);
  out->assign((bytes + sizeof(T) - 1) / sizeof(T), T{});
  if (bytes == 0) return true;
  if (OrtStatus* st = api.ReadOpAttr(attr, type, out->data(), bytes, &bytes)) {
    api.ReleaseStatus(st);
    throw ConvError(std::string("attribute '") + name + "' has another type than ONNX Conv gives it");
  }
  out->resize(bytes / sizeof(T));
  return true;
}

ConvAttributes ReadAttributes(const OrtApi& api, OrtShapeInferContext* context) {
  ConvAttributes a;
  std::vector<char> text;
  if (ReadAttribute(api, context, "auto_pad", ORT_OP_ATTR_STRING, &text)) a.auto_pad.assign(text.begin(), text.end());
  ReadAttribute(api, context, "dilations", ORT_OP_ATTR_INTS, &a.dilations);
  ReadAttribute(api, context, "kernel_shape", ORT_OP_ATTR_INTS, &a.kernel_shape);
  ReadAttribute(api, context, "pads", ORT_OP_ATTR_INTS, &a.pads);
  ReadAttribute(api, context, "strides", ORT_OP_ATTR_INTS, &a.strides);
  std::vector<int64_t> group;
  if (ReadAttribute(api, context, "group", ORT_OP_ATTR_INT, &group)) {
    if (group.size() != 1) throw ConvError("attribute 'group' must be one int");
    a.group = group[0];
  }
  return a;
}

OrtStatusPtr SetOutput(const OrtApi& api, OrtShapeInferContext* context, const Dims& y) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  if (OrtStatus* st = api.CreateTensorTypeAndShapeInfo(&info)) return st;
  std::unique_ptr<OrtTensorTypeAndShapeInfo, void (*)(OrtTensorTypeAndShapeInfo*)> owned(
      info, api.ReleaseTensorTypeAndShapeInfo);
  std::vector<const char*> names;
  for (const std::string& name : y.names) names.push_back(name.c_str());
  if (OrtStatus* st = api.SetTensorElementType(info, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)) return st;
  if (OrtStatus* st = api.SetDimensions(info, y.values.data(), y.values.size())) return st;
  if (OrtStatus* st = api.SetSymbolicDimensions(info, names.data(), names.size())) return st;
  return api.ShapeInferContext_SetOutputTypeShape(context, 0, info);
}

}  // namespace

OrtStatusPtr InferConvOutputShape(const OrtApi& api, OrtShapeInferContext* context) {
  Dims x, w;
  if (!ReadInputDims(api, context, 0, &x) || !ReadInputDims(api, context, 1, &w)) return nullptr;
  if (x.values.size() < 3 || x.values.size() > 4 || w.values.size() != x.values.size()) return nullptr;
  // Channels-last: X's dims read in ONNX's order (names too), Y's written back channels-last.
  // (With input_layout "NCHW", X channels-first and Y channels-last.)
  bool nhwc = false, x_nchw = false;
  try {
    std::vector<char> layout, input_layout, weight_layout;
    if (ReadAttribute(api, context, "layout", ORT_OP_ATTR_STRING, &layout))
      nhwc = ParseLayout(std::string(layout.begin(), layout.end())) == Layout::kNhwc;
    if (ReadAttribute(api, context, "input_layout", ORT_OP_ATTR_STRING, &input_layout))
      x_nchw = ParseInputLayout(std::string(input_layout.begin(), input_layout.end()), nhwc);
    // W stored as Winograd's U: the kernel is its 3x3.
    if (ReadAttribute(api, context, "weight_layout", ORT_OP_ATTR_STRING, &weight_layout))
      if (const int tile = WinogradLayoutTile(std::string(weight_layout.begin(), weight_layout.end())))
        if (std::none_of(w.values.begin(), w.values.end(), [](int64_t d) { return d < 0; }))
          w.values = WinogradKernelDims(w.values, tile);
  } catch (const ConvError&) {
    return nullptr;  // the kernel reports it, naming the node
  }
  if (nhwc && !x_nchw) {
    x.values = NhwcToNchwDims(x.values);
    std::vector<std::string> names{x.names[0], x.names.back()};
    names.insert(names.end(), x.names.begin() + 1, x.names.end() - 1);
    x.names = names;
  }
  // ORT takes each dimension as a value or a name: with a size unknown (W's, or X's spatial) the
  // whole shape stays unknown, as it would be without this function.
  if (x.values[0] < 0 && x.names[0].empty()) return nullptr;
  for (int64_t d : w.values)
    if (d <= 0) return nullptr;
  for (size_t i = 2; i < x.values.size(); ++i)
    if (x.values[i] <= 0) return nullptr;
  std::vector<int64_t> out;
  try {
    // The batch and channels do not change the spatial size; stand-ins keep them valid.
    const ConvAttributes attrs = ReadAttributes(api, context);
    ValidateAttributes(attrs);  // e.g. a zero group or stride, before dividing by it
    std::vector<int64_t> x_dims = x.values;
    x_dims[0] = 1;
    x_dims[1] = CheckedMul(w.values[1], attrs.group, "W's input channels x group");
    out = ResolveConvShape(attrs, x_dims, w.values).output_dims();
  } catch (const ConvError&) {
    return nullptr;  // the kernel reports it, naming the node
  }
  Dims y;  // N from X (value or name), M from W, the spatial sizes resolved
  y.values = out;
  y.values[0] = x.values[0];
  y.names.assign(out.size(), "");
  y.names[0] = x.names[0];
  if (nhwc) y.values = NchwToNhwcDims(y.values);
  return SetOutput(api, context, y);
}

OrtStatusPtr InferPoolOutputShape(const OrtApi& api, OrtShapeInferContext* context, PoolKind kind) {
  Dims x;
  if (!ReadInputDims(api, context, 0, &x)) return nullptr;
  if (x.values.size() < 3 || x.values.size() > 4) return nullptr;
  if (x.values[0] < 0 && x.names[0].empty()) return nullptr;
  for (size_t i = 1; i < x.values.size(); ++i)
    if (x.values[i] < 0) return nullptr;  // a symbolic H, W or C: left to the kernel
  std::vector<int64_t> out;
  try {
    PoolAttributes a;
    a.window = ReadAttributes(api, context);
    std::vector<int64_t> flag;
    if (ReadAttribute(api, context, "ceil_mode", ORT_OP_ATTR_INT, &flag) && flag.size() == 1) a.ceil_mode = flag[0];
    if (ReadAttribute(api, context, "count_include_pad", ORT_OP_ATTR_INT, &flag) && flag.size() == 1)
      a.count_include_pad = flag[0];
    ValidatePoolAttributes(kind, a);
    std::vector<int64_t> x_dims = x.values;
    x_dims[0] = 1;
    out = PoolOutputDims(ResolvePoolShape(a, x_dims));
  } catch (const ConvError&) {
    return nullptr;  // the kernel reports it, naming the node
  }
  Dims y;
  y.values = out;
  y.values[0] = x.values[0];
  y.names.assign(out.size(), "");
  y.names[0] = x.names[0];
  return SetOutput(api, context, y);
}

}  // namespace im2win
