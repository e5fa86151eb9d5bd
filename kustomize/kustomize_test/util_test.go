package kustomizetest

import (
	"bufio"
	"bytes"
	"strconv"

	"k8s.io/apimachinery/pkg/api/resource"
)

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func resourceQuantity(s string) resource.Quantity { return resource.MustParse(s) }
