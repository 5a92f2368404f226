# The controller image, for machines with a container engine. `make image` builds the same
# image without one (tests/image/build.sh): the binary and the libraries it links, static
# helm, kustomize and sops, CA certificates, user 65532.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gantry

FROM golang:1.26-bookworm AS tools
ARG HELM_VERSION=v3.22.0
ARG KUSTOMIZE_VERSION=v5.7.1
ARG SOPS_VERSION=v3.13.3
RUN CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" helm.sh/helm/v3/cmd/helm@${HELM_VERSION} \
 && CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION} \
 && CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" github.com/getsops/sops/v3/cmd/sops@${SOPS_VERSION}

# glibc, libgcc and OpenSSL; zlib is copied from the build stage.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1
COPY --from=build /src/target/release/gantry /usr/local/bin/gantry
COPY --from=tools /go/bin/helm /go/bin/kustomize /go/bin/sops /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/gantry"]
CMD ["controller"]
