// Package kustomize_test renders vgpu's Kustomize base and overlays with the
// kustomize library and checks the objects they produce.
package kustomize_test
