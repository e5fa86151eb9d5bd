module github.com/vgpu-io/vgpu/test

go 1.26

require github.com/vgpu-io/vgpu/lib v0.0.0

replace github.com/vgpu-io/vgpu/lib => ../lib
