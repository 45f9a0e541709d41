"""Base models: TF-IDF SVM, Hugging Face text classifiers and timm image classifiers."""
