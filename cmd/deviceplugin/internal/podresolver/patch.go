package podresolver

import "encoding/json"

// jsonMergePatch sets one annotation and leaves the others alone.
func jsonMergePatch(key, value string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{key: value}},
	})
}
