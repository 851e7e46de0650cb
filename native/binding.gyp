{
  "targets": [{
    "target_name": "chainfs_native",
    "sources": ["chainfs_native.cc"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
    "cflags_cc": ["-O2", "-Wall", "-Wextra"]
  }, {
    "target_name": "chainfs_fuse",
    "sources": ["chainfs_fuse.cc"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
    "cflags_cc": ["-O2", "-Wall", "-Wextra", "<!@(pkg-config --cflags fuse)"],
    "libraries": ["<!@(pkg-config --libs fuse)"]
  }]
}
