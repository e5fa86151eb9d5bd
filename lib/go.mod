module github.com/vgpu-io/vgpu/lib

go 1.26
