{
  "targets": [{
    "target_name": "chainfs_native",
    "sources": ["chainfs_native.cc"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
    "cflags_cc": ["-O2", "-Wall", "-Wextra"]
  }]
}
