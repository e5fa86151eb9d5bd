package kustomizetest

import (
	"bufio"
	"bytes"
	"strconv"
)

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func itoa(i int32) string { return strconv.Itoa(int(i)) }
