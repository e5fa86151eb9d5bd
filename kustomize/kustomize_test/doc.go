// Package kustomizetest renders vgpu's Kustomize base and overlays with the
// kustomize library and checks the objects they produce.
package kustomizetest
