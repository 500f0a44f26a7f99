"""The face service: photo in → faces, embeddings, match decisions out."""
