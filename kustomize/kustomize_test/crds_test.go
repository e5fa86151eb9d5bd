package kustomizetest

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The custom resources of the optional components, with the fields the
// manifests use (cert-manager.io/v1 and monitoring.coreos.com/v1, as
// documented by those projects). Decoding is strict, so a misspelt field
// fails; a field used here that the real CRD lacks would not, which is why
// the fields are few.

type Issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName string   `json:"secretName"`
		DNSNames   []string `json:"dnsNames"`
		IssuerRef  struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"issuerRef"`
		Duration    *metav1.Duration `json:"duration,omitempty"`
		RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
	} `json:"spec"`
}

type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port      string `json:"port"`
			Path      string `json:"path,omitempty"`
			Interval  string `json:"interval,omitempty"`
			Scheme    string `json:"scheme,omitempty"`
			TLSConfig *struct {
				ServerName string `json:"serverName,omitempty"`
				CA         struct {
					Secret struct {
						Name string `json:"name"`
						Key  string `json:"key"`
					} `json:"secret"`
				} `json:"ca"`
			} `json:"tlsConfig,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

func (in *Issuer) DeepCopyObject() k8sruntime.Object         { c := *in; return &c }
func (in *Certificate) DeepCopyObject() k8sruntime.Object    { c := *in; return &c }
func (in *ServiceMonitor) DeepCopyObject() k8sruntime.Object { c := *in; return &c }

var customResources = map[schema.GroupVersionKind]func() k8sruntime.Object{
	{Group: "cert-manager.io", Version: "v1", Kind: "Issuer"}:               func() k8sruntime.Object { return &Issuer{} },
	{Group: "cert-manager.io", Version: "v1", Kind: "Certificate"}:          func() k8sruntime.Object { return &Certificate{} },
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}: func() k8sruntime.Object { return &ServiceMonitor{} },
}
