// Where a tensor's memory lives.
//
//   Device d = Device::cpu();  Device g{DeviceType::CUDA, 1};  to_string(g) == "cuda:1";
#pragma once

#include <ostream>
#include <string>

namespace loom::core {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static constexpr Device cpu() { return {}; }
  static constexpr Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  friend bool operator==(const Device&, const Device&) = default;
};

inline std::string to_string(Device d) {
  return d.is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(d.index);
}
inline std::ostream& operator<<(std::ostream& os, Device d) { return os << to_string(d); }

}  // namespace loom::core
